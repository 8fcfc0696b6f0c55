package imagebuild

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestParsePlatforms(t *testing.T) {
	t.Parallel()
	amd, arm := v1.Platform{OS: "linux", Architecture: "amd64"}, v1.Platform{OS: "linux", Architecture: "arm64"}
	tests := []struct {
		name, in string
		want     []v1.Platform
		wantErr  string
	}{
		{name: "both", in: "linux/amd64,linux/arm64", want: []v1.Platform{amd, arm}},
		{name: "order kept, spaces", in: " linux/arm64 , linux/amd64", want: []v1.Platform{arm, amd}},
		{name: "one", in: "linux/amd64", want: []v1.Platform{amd}},
		{name: "unsupported", in: "linux/s390x", wantErr: "is not linux/amd64 or linux/arm64"},
		{name: "twice", in: "linux/amd64,linux/amd64", wantErr: "given twice"},
		{name: "empty", in: " , ", wantErr: "no platform"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParsePlatforms(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParsePlatforms(%q) err = %v, want %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParsePlatforms(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseSourceDateEpoch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{in: "0", want: time.Unix(0, 0).UTC()},
		{in: "1764748800\n", want: time.Date(2025, 12, 3, 8, 0, 0, 0, time.UTC)},
		{in: "-1", wantErr: true},
		{in: "2025-12-03", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseSourceDateEpoch(tt.in)
			if (err != nil) != tt.wantErr || !got.Equal(tt.want) {
				t.Fatalf("ParseSourceDateEpoch(%q) = %v, %v; want %v (error %v)", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestLayerTar checks the layer's shape without a Go build: sorted
// entries, parents added, fixed owners and mtimes, same bytes twice.
func TestLayerTar(t *testing.T) {
	t.Parallel()
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	entries := rootfsEntries("edge", []byte("binary"), []byte("certs"))
	a, err := layerTar(entries, mtime)
	if err != nil {
		t.Fatal(err)
	}
	// Reversed input must give the same bytes: the order is the tar's own.
	rev := make([]entry, len(entries))
	for i, e := range entries {
		rev[len(entries)-1-i] = e
	}
	b, err := layerTar(rev, mtime)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("layer tar depends on the entry order")
	}
	type hdr struct {
		name     string
		mode     int64
		uid, gid int
	}
	want := []hdr{
		{"etc/", 0o755, 0, 0}, {"etc/group", 0o644, 0, 0}, {"etc/passwd", 0o644, 0, 0},
		{"etc/ssl/", 0o755, 0, 0}, {"etc/ssl/certs/", 0o755, 0, 0}, {"etc/ssl/certs/ca-certificates.crt", 0o644, 0, 0},
		{"home/", 0o755, 0, 0}, {"home/nonroot/", 0o700, UID, UID},
		{"tmp/", 0o1777, 0, 0},
		{"usr/", 0o755, 0, 0}, {"usr/local/", 0o755, 0, 0}, {"usr/local/bin/", 0o755, 0, 0}, {"usr/local/bin/edge", 0o755, 0, 0},
	}
	var got []hdr
	tr := tar.NewReader(bytes.NewReader(a))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(mtime) || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: mtime %v uname %q gname %q, want %v and no names", h.Name, h.ModTime, h.Uname, h.Gname, mtime)
		}
		got = append(got, hdr{h.Name, h.Mode, h.Uid, h.Gid})
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("entries:\n got %v\nwant %v", got, want)
	}
}

func TestCheckStaticELF(t *testing.T) {
	t.Parallel()
	notELF := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, arch, wantErr string
	}{
		// /bin/sh on Debian is dynamically linked: it has a PT_INTERP.
		{name: "dynamic", path: "/bin/sh", arch: "amd64", wantErr: "dynamically linked"},
		{name: "wrong machine", path: "/bin/sh", arch: "arm64", wantErr: "want one for arm64"},
		{name: "not ELF", path: notELF, arch: "amd64", wantErr: "check static binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := CheckStaticELF(tt.path, tt.arch)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckStaticELF(%s, %s) = %v, want %q", tt.path, tt.arch, err, tt.wantErr)
			}
		})
	}
}

// TestReadGit checks the revision and created time the command takes
// from git when neither is given: HEAD's commit and committer time.
func TestReadGit(t *testing.T) {
	t.Parallel()
	root, err := FindRepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	head := func() string {
		out, err := exec.Command("git", "-C", root, "log", "-1", "--format=%H %ct", "HEAD").Output()
		if err != nil {
			t.Fatalf("git log: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	// Other work may commit meanwhile: HEAD before or after must match.
	before := head()
	g, err := readGit(t.Context(), root)
	if err != nil {
		t.Fatal(err)
	}
	after := head()
	got := g.Revision + " " + strconv.FormatInt(g.Time.Unix(), 10)
	if got != before && got != after {
		t.Fatalf("readGit = %s, want HEAD %s or %s", got, before, after)
	}
	m, err := Options{RepoRoot: root}.withDefaultsMeta(t)
	if err != nil {
		t.Fatal(err)
	}
	if m.Version == "" || m.Source != "https://github.com/k8s-selfhost-repo/k8s-selfhost-repo" {
		t.Fatalf("meta from the chart: %+v", m)
	}
}

func (o Options) withDefaultsMeta(t *testing.T) (meta, error) {
	o, err := o.withDefaults()
	if err != nil {
		return meta{}, err
	}
	return o.meta(t.Context())
}
