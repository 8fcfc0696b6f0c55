// Package docs checks the repository's Markdown: README.md stays a page a
// newcomer reads in minutes (at most MaxReadmeBytes), README.zh-CN.md keeps
// the same section structure as README.md (same headings, levels and order,
// so a translation cannot silently fall behind), and every relative link in
// the READMEs, CONTRIBUTING.md and docs/ points at a file that exists, and
// at a heading that exists when it names one. test/readme-sections.sh runs
// these tests as a step of test/all.sh; they need nothing but the checkout.
package docs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"
	"unicode"
)

// MaxReadmeBytes bounds README.md (10 KiB): the details belong in
// edge/README.md, docs/ and CONTRIBUTING.md.
const MaxReadmeBytes = 10240

// Heading is one Markdown ATX heading: its level (1 for "#") and text.
type Heading struct {
	Level int
	Text  string
	Line  int
}

func (h Heading) String() string {
	return fmt.Sprintf("%s %s", strings.Repeat("#", h.Level), h.Text)
}

// Link is one inline Markdown link target, as written, and its line.
type Link struct {
	Target string
	Line   int
}

// Doc is what the checks read from one Markdown file: its headings, its
// links and the anchors its headings and HTML ids define.
type Doc struct {
	Headings []Heading
	Links    []Link
	Anchors  map[string]bool
}

var (
	headingRE = regexp.MustCompile(`^(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$`)
	// linkRE finds inline links and images: [text](target) or
	// [text](target "title"). Reference-style links are not used here.
	linkRE   = regexp.MustCompile(`\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	htmlIDRE = regexp.MustCompile(`<a\s+(?:name|id)="([^"]+)"`)
	codeRE   = regexp.MustCompile("`[^`]*`")
)

// Parse reads a Markdown document. Fenced code blocks (``` or ~~~) are
// skipped: a "# comment" in a shell block is not a heading.
func Parse(src []byte) Doc {
	d := Doc{Anchors: map[string]bool{}}
	seen := map[string]int{}
	fence := ""
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			continue
		}
		if m := headingRE.FindStringSubmatch(line); m != nil {
			h := Heading{Level: len(m[1]), Text: m[2], Line: n}
			d.Headings = append(d.Headings, h)
			slug := Slug(h.Text)
			if k := seen[slug]; k > 0 {
				d.Anchors[fmt.Sprintf("%s-%d", slug, k)] = true
			} else {
				d.Anchors[slug] = true
			}
			seen[slug]++
		}
		for _, m := range htmlIDRE.FindAllStringSubmatch(line, -1) {
			d.Anchors[m[1]] = true
		}
		for _, m := range linkRE.FindAllStringSubmatch(codeRE.ReplaceAllString(line, ""), -1) {
			d.Links = append(d.Links, Link{Target: m[1], Line: n})
		}
	}
	return d
}

// Slug is the anchor GitHub gives a heading: lower case, spaces become
// "-", and everything but letters, digits, "-" and "_" is dropped (so
// "3. The data path" is "3-the-data-path").
func Slug(text string) string {
	text = codeRE.ReplaceAllStringFunc(text, func(s string) string { return strings.Trim(s, "`") })
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// IsExternal tells whether a link target leaves the repository (a URL
// with a scheme such as https: or mailto:).
func IsExternal(target string) bool {
	i := strings.IndexByte(target, ':')
	if i <= 0 {
		return false
	}
	for _, r := range target[:i] {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '+' || r == '.' || r == '-') {
			return false
		}
	}
	return true
}

// readDoc parses one file of the checkout.
func readDoc(path string) (Doc, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return Doc{}, fmt.Errorf("read %s: %w", path, err)
	}
	return Parse(src), nil
}
