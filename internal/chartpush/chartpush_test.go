package chartpush

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const testChartYAML = "apiVersion: v2\nname: demo\nversion: 1.2.3\nappVersion: \"4.5\"\ndescription: d\nhome: https://example.invalid/demo\n"

// writeChart makes a chart directory from files (path -> content).
func writeChart(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "demo")
	for p, content := range files {
		f := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// entries lists the archive's tar entries and checks their fixed metadata.
func entries(t *testing.T, archive []byte, modTime time.Time) []string {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	if gz.Name != "" || !gz.ModTime.IsZero() {
		t.Errorf("gzip header name %q mtime %v, want neither", gz.Name, gz.ModTime)
	}
	tr := tar.NewReader(gz)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg || h.Mode != 0o644 || h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(modTime) {
			t.Errorf("%s: type %c mode %o owner %d:%d mtime %v", h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime)
		}
		names = append(names, h.Name)
	}
}

func TestPackage(t *testing.T) {
	t.Parallel()
	dir := writeChart(t, map[string]string{
		"Chart.yaml": testChartYAML, "values.yaml": "a: 1\n", ".helmignore": "# comment\n*.bak\n\nci/*\n",
		"templates/cm.yaml": "kind: ConfigMap\n", "templates/.hidden": "x", "templates/old.yaml.bak": "x",
		"ci/values.yaml": "x", "files/ci/keep": "x",
	})
	mod := time.Unix(1700000000, 0).UTC()
	c, err := Package(dir, mod)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"demo/.helmignore", "demo/Chart.yaml", "demo/files/ci/keep", "demo/templates/cm.yaml", "demo/values.yaml"}
	if got := entries(t, c.Archive, mod); !slices.Equal(got, want) {
		t.Errorf("archive entries %q, want %q", got, want)
	}
	if c.Name != "demo" || c.Version != "1.2.3" || c.AppVersion != "4.5" || c.Home != "https://example.invalid/demo" {
		t.Errorf("metadata %+v", c)
	}
	var cfg map[string]any
	if err := json.Unmarshal(c.Config, &cfg); err != nil || cfg["name"] != "demo" || cfg["version"] != "1.2.3" || cfg["apiVersion"] != "v2" {
		t.Errorf("config %s: %v", c.Config, err)
	}
	again, err := Package(dir, mod)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Archive, c.Archive) {
		t.Error("two packages of one directory differ")
	}
}

func TestPackageRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		files   map[string]string
		symlink bool
		wantErr string
	}{
		{name: "no Chart.yaml", files: map[string]string{"values.yaml": ""}, wantErr: "Chart.yaml"},
		{name: "apiVersion v1", files: map[string]string{"Chart.yaml": "apiVersion: v1\nname: demo\nversion: 1.0.0\n"}, wantErr: "apiVersion"},
		{name: "no version", files: map[string]string{"Chart.yaml": "apiVersion: v2\nname: demo\n"}, wantErr: "required"},
		{name: "version not a tag", files: map[string]string{"Chart.yaml": "apiVersion: v2\nname: demo\nversion: 1.0.0+build.1\n"}, wantErr: "OCI reference"},
		{name: "negated ignore rule", files: map[string]string{"Chart.yaml": testChartYAML, ".helmignore": "*.txt\n!keep.txt\n"}, wantErr: "not supported"},
		{name: "double-star ignore rule", files: map[string]string{"Chart.yaml": testChartYAML, ".helmignore": "**/x\n"}, wantErr: "not supported"},
		{name: "symlink", files: map[string]string{"Chart.yaml": testChartYAML}, symlink: true, wantErr: "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := writeChart(t, tt.files)
			if tt.symlink {
				if err := os.Symlink("/etc/hostname", filepath.Join(dir, "link")); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Package(dir, time.Unix(0, 0))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestPackageRepositoryChart packages this repository's chart: every file
// that helm lint and the e2e tests read is in it.
func TestPackageRepositoryChart(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "..", filepath.FromSlash(ChartDir))
	c, err := Package(dir, time.Unix(0, 0).UTC())
	if err != nil {
		t.Fatal(err)
	}
	got := entries(t, c.Archive, time.Unix(0, 0).UTC())
	for _, want := range []string{"Chart.yaml", "values.yaml", "values.schema.json", "templates/deployment.yaml"} {
		if !slices.Contains(got, c.Name+"/"+want) {
			t.Errorf("archive lacks %s: %q", want, got)
		}
	}
}

func TestTarget(t *testing.T) {
	t.Parallel()
	tests := []struct {
		dest     string
		insecure bool
		want     string // repository; "" means an error
		scheme   string
	}{
		{dest: "oci://127.0.0.1:5000/charts", want: "127.0.0.1:5000/charts/demo", scheme: "http"},
		{dest: "127.0.0.1:5000/charts/", want: "127.0.0.1:5000/charts/demo", scheme: "http"},
		{dest: "oci://ghcr.io/org/charts", want: "ghcr.io/org/charts/demo", scheme: "https"},
		{dest: "oci://registry.example:5000", insecure: true, want: "registry.example:5000/demo", scheme: "http"},
		{dest: "oci://localhost/charts", want: "localhost/charts/demo", scheme: "https"},
		{dest: "oci://myorg/charts"},
		{dest: "oci://"},
		{dest: "oci://ghcr.io/Upper"},
	}
	for _, tt := range tests {
		t.Run(tt.dest, func(t *testing.T) {
			t.Parallel()
			repo, err := Target(tt.dest, "demo", tt.insecure)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("Target(%q) = %s, want an error", tt.dest, repo)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if repo.String() != tt.want || repo.Scheme() != tt.scheme {
				t.Errorf("Target(%q) = %s (%s), want %s (%s)", tt.dest, repo, repo.Scheme(), tt.want, tt.scheme)
			}
		})
	}
}
