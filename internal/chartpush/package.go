package chartpush

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"sigs.k8s.io/yaml"
)

// Chart is a packaged chart: its archive and the metadata Helm puts in the
// artifact's config.
type Chart struct {
	// Name and Version are Chart.yaml's name and version; Version is the tag.
	Name, Version string
	// AppVersion, Description and Home are Chart.yaml's, for annotations.
	AppVersion, Description, Home string
	// Archive is the .tgz `helm package` would make: every file under
	// <Name>/, minus what .helmignore excludes.
	Archive []byte
	// Config is Chart.yaml as JSON, the artifact's config blob (Helm reads
	// it into its chart metadata on pull).
	Config []byte
}

// chartYAML is what Package checks in Chart.yaml.
type chartYAML struct {
	APIVersion  string `json:"apiVersion"`
	Name        string `json:"name"`
	Version     string `json:"version"`
	AppVersion  string `json:"appVersion"`
	Description string `json:"description"`
	Home        string `json:"home"`
}

// Package reads the chart in dir and archives it. Every entry's mtime is
// modTime and owners and modes are fixed, so one commit gives one archive
// and one artifact digest. Only regular files are accepted (a symlink is
// refused rather than followed).
func Package(dir string, modTime time.Time) (*Chart, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return nil, fmt.Errorf("package chart: %w", err)
	}
	var meta chartYAML
	if err := yaml.Unmarshal(raw, &meta); err != nil {
		return nil, fmt.Errorf("package chart: parse Chart.yaml: %w", err)
	}
	if err := meta.validate(); err != nil {
		return nil, fmt.Errorf("package chart %s: %w", dir, err)
	}
	config, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("package chart: Chart.yaml as JSON: %w", err)
	}
	ignore, err := readHelmignore(filepath.Join(dir, ".helmignore"))
	if err != nil {
		return nil, fmt.Errorf("package chart: %w", err)
	}
	files, err := chartFiles(dir, ignore)
	if err != nil {
		return nil, fmt.Errorf("package chart: %w", err)
	}
	archive, err := writeArchive(dir, meta.Name, files, modTime)
	if err != nil {
		return nil, fmt.Errorf("package chart: %w", err)
	}
	return &Chart{Name: meta.Name, Version: meta.Version, AppVersion: meta.AppVersion,
		Description: meta.Description, Home: meta.Home, Archive: archive, Config: config}, nil
}

func (m chartYAML) validate() error {
	if m.APIVersion != "v2" {
		return fmt.Errorf("chart metadata (Chart.yaml): apiVersion %q, want v2", m.APIVersion)
	}
	if m.Name == "" || m.Version == "" {
		return fmt.Errorf("chart metadata (Chart.yaml): name and version are required")
	}
	// Helm tags the artifact with the version, replacing "+" (not allowed in
	// a tag) by "_"; keep to versions that are tags as written.
	if _, err := name.NewTag("example.invalid/"+m.Name+":"+m.Version, name.StrictValidation); err != nil {
		return fmt.Errorf("chart metadata (Chart.yaml): name %q or version %q is not usable in an OCI reference: %w", m.Name, m.Version, err)
	}
	return nil
}

// readHelmignore reads the glob patterns of a .helmignore. Only the forms
// this repository uses are supported — a pattern without "/" matches a
// base name, one with "/" a path relative to the chart — and a rule Helm
// reads differently (negation "!", "**", a trailing "/") is refused rather
// than guessed, so the archive never silently differs from helm package's.
// A missing file means no patterns.
func readHelmignore(file string) ([]string, error) {
	b, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read .helmignore: %w", err)
	}
	var pats []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		if strings.HasPrefix(p, "!") || strings.Contains(p, "**") || strings.HasSuffix(p, "/") {
			return nil, fmt.Errorf("read .helmignore: rule %q is not supported (only plain globs)", p)
		}
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("read .helmignore: rule %q: %w", p, err)
		}
		pats = append(pats, strings.TrimPrefix(p, "/"))
	}
	return pats, sc.Err()
}

// ignored reports whether rel (slash-separated, relative to the chart) is
// excluded: by a pattern, or as a dotfile under templates/ (Helm's default
// rule).
func ignored(rel string, pats []string) bool {
	if strings.HasPrefix(rel, "templates/") && strings.HasPrefix(path.Base(rel), ".") {
		return true
	}
	for _, p := range pats {
		target := path.Base(rel)
		if strings.Contains(p, "/") {
			target = rel
		}
		if ok, _ := path.Match(p, target); ok {
			return true
		}
	}
	return false
}

// chartFiles lists the chart's files, slash-separated and sorted.
func chartFiles(dir string, pats []string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if ignored(rel, pats) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case d.IsDir():
			return nil
		case d.Type().IsRegular():
			files = append(files, rel)
			return nil
		default:
			return fmt.Errorf("%s: not a regular file or directory", p)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list chart files: %w", err)
	}
	slices.Sort(files)
	return files, nil
}

// writeArchive tars files under chartName/ and gzips them, with no name or
// time in the gzip header.
func writeArchive(dir, chartName string, files []string, modTime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	tw := tar.NewWriter(gz)
	for _, rel := range files {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			return nil, fmt.Errorf("read chart file: %w", err)
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: chartName + "/" + rel, Mode: 0o644,
			Size: int64(len(b)), ModTime: modTime.UTC().Truncate(time.Second), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar %s: %w", rel, err)
		}
		if _, err := tw.Write(b); err != nil {
			return nil, fmt.Errorf("tar %s: %w", rel, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}
	if err := gz.Close(); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return buf.Bytes(), nil
}
