package docs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// root is the checkout, seen from this package's directory (go test runs
// a package's tests in its own directory).
const root = "../.."

// linkedFiles are the Markdown files whose relative links must resolve:
// the READMEs, CONTRIBUTING.md and the pages under docs/.
func linkedFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"README*.md", "CONTRIBUTING.md", "edge/README.md", "docs/*.md",
		"controlplane/README.md", "charts/README.md"} {
		m, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			t.Fatalf("glob %s: %v", pattern, err)
		}
		if len(m) == 0 {
			t.Fatalf("glob %s: no file; the checks expect it (test/docs)", pattern)
		}
		files = append(files, m...)
	}
	return files
}

func TestReadmeSize(t *testing.T) {
	fi, err := os.Stat(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > MaxReadmeBytes {
		t.Errorf("README.md is %d bytes, more than %d: move details to edge/README.md, docs/ or CONTRIBUTING.md",
			fi.Size(), MaxReadmeBytes)
	}
}

// TestReadmeSections compares the heading structure (level, count, order)
// of README.md and its Chinese counterpart; the texts differ by language.
func TestReadmeSections(t *testing.T) {
	en, err := readDoc(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	zh, err := readDoc(filepath.Join(root, "README.zh-CN.md"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := sectionDiff(en.Headings, zh.Headings); diff != "" {
		t.Errorf("README.md and README.zh-CN.md differ in their section structure "+
			"(same number, levels and order of headings wanted):\n%s", diff)
	}
}

// sectionDiff lists both heading lists side by side from the first
// position where their levels differ; "" when the structures match.
func sectionDiff(a, b []Heading) string {
	first := -1
	for i := 0; i < max(len(a), len(b)); i++ {
		if i >= len(a) || i >= len(b) || a[i].Level != b[i].Level {
			first = i
			break
		}
	}
	if first < 0 {
		return ""
	}
	var s strings.Builder
	fmt.Fprintf(&s, "  %d headings in README.md, %d in README.zh-CN.md; first difference at heading %d\n",
		len(a), len(b), first+1)
	cell := func(hs []Heading, i int) string {
		if i >= len(hs) {
			return "(none)"
		}
		return fmt.Sprintf("%s (line %d)", hs[i], hs[i].Line)
	}
	for i := 0; i < max(len(a), len(b)); i++ {
		mark := "  "
		if i >= first && (i >= len(a) || i >= len(b) || a[i].Level != b[i].Level) {
			mark = "! "
		}
		fmt.Fprintf(&s, "%s%2d  %-60s | %s\n", mark, i+1, cell(a, i), cell(b, i))
	}
	return s.String()
}

func TestSectionDiff(t *testing.T) {
	h := func(levels ...int) []Heading {
		var hs []Heading
		for i, l := range levels {
			hs = append(hs, Heading{Level: l, Text: fmt.Sprint("h", i), Line: i + 1})
		}
		return hs
	}
	for _, tc := range []struct {
		name string
		a, b []Heading
		same bool
	}{
		{"equal", h(1, 2, 2, 3), h(1, 2, 2, 3), true},
		{"missing section", h(1, 2, 2), h(1, 2), false},
		{"extra section", h(1, 2), h(1, 2, 2), false},
		{"other level", h(1, 2, 3), h(1, 2, 2), false},
		{"empty", nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sectionDiff(tc.a, tc.b); (got == "") != tc.same {
				t.Errorf("sectionDiff = %q, want same=%v", got, tc.same)
			}
		})
	}
}

// TestRelativeLinks checks every relative link of the files linkedFiles
// names: the file (or directory) must exist, and a "#fragment" into a
// Markdown file must name one of its headings.
func TestRelativeLinks(t *testing.T) {
	docs := map[string]Doc{}
	load := func(path string) (Doc, error) {
		if d, ok := docs[path]; ok {
			return d, nil
		}
		d, err := readDoc(path)
		if err == nil {
			docs[path] = d
		}
		return d, err
	}
	for _, file := range linkedFiles(t) {
		d, err := load(file)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, file)
		for _, l := range d.Links {
			if IsExternal(l.Target) {
				continue
			}
			if err := checkLink(file, l.Target, load); err != nil {
				t.Errorf("%s:%d: link %q: %v", rel, l.Line, l.Target, err)
			}
		}
	}
}

// checkLink resolves target against the directory of file.
func checkLink(file, target string, load func(string) (Doc, error)) error {
	path, frag, _ := strings.Cut(target, "#")
	dest := file
	if path != "" {
		dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
		fi, err := os.Stat(dest)
		if err != nil {
			return fmt.Errorf("no such file or directory in the repository")
		}
		if fi.IsDir() {
			return nil
		}
	}
	if frag == "" || !strings.HasSuffix(dest, ".md") {
		return nil
	}
	d, err := load(dest)
	if err != nil {
		return err
	}
	if !d.Anchors[strings.ToLower(frag)] {
		return fmt.Errorf("no heading with anchor #%s in %s", frag, filepath.Base(dest))
	}
	return nil
}

func TestSlug(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"3. The data path of a pull", "3-the-data-path-of-a-pull"},
		{"containerd (1.6/1.7) with a hosts.toml mirror", "containerd-1617-with-a-hoststoml-mirror"},
		{"Quick start: a cluster", "quick-start-a-cluster"},
		{"A tenant's own upstream credentials", "a-tenants-own-upstream-credentials"},
		{"`--storage` and S3", "--storage-and-s3"},
		{"快速开始：集群", "快速开始集群"},
	} {
		if got := Slug(tc.in); got != tc.want {
			t.Errorf("Slug(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseSkipsCodeAndFindsLinks(t *testing.T) {
	d := Parse([]byte("# Title\n\n```sh\n# not a heading [x](nope.md)\n```\n\n## Two\nsee [a](a.md#two) and `[b](b.md)`\n## Two\n"))
	if len(d.Headings) != 3 || d.Headings[1].Level != 2 {
		t.Fatalf("headings = %v, want # Title, ## Two, ## Two", d.Headings)
	}
	if len(d.Links) != 1 || d.Links[0].Target != "a.md#two" || d.Links[0].Line != 8 {
		t.Fatalf("links = %v, want a.md#two on line 8", d.Links)
	}
	for _, a := range []string{"title", "two", "two-1"} {
		if !d.Anchors[a] {
			t.Errorf("anchor %q missing from %v", a, d.Anchors)
		}
	}
}
