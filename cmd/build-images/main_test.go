package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/imagebuild"
)

func TestParseFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, f flags)
		wantErr string
	}{
		{name: "defaults", check: func(t *testing.T, f flags) {
			if f.opts.Prefix != imagebuild.DefaultPrefix || len(f.opts.Platforms) != 2 || !f.opts.Created.IsZero() ||
				f.opts.CACertFile != imagebuild.DefaultCACertFile || f.out != "" || f.push != "" {
				t.Errorf("defaults: %+v", f)
			}
		}},
		{name: "push sets the prefix", args: []string{"--push", "127.0.0.1:5000/selfhost", "--platforms", "linux/amd64"}, check: func(t *testing.T, f flags) {
			if f.opts.Prefix != "127.0.0.1:5000/selfhost" || len(f.opts.Platforms) != 1 || f.opts.Platforms[0].Architecture != "amd64" {
				t.Errorf("push: %+v", f.opts)
			}
		}},
		{name: "chart push alone builds no image", args: []string{"--chart-push", "oci://127.0.0.1:5000/charts"}, check: func(t *testing.T, f flags) {
			if f.chartPush != "oci://127.0.0.1:5000/charts" || !f.chartOnly() {
				t.Errorf("chart push: %+v", f)
			}
		}},
		{name: "chart push with images", args: []string{"--chart-push", "oci://127.0.0.1:5000/charts", "--push", "127.0.0.1:5000/selfhost"}, check: func(t *testing.T, f flags) {
			if f.chartOnly() {
				t.Errorf("chartOnly with --push: %+v", f)
			}
		}},
		{name: "chart push without registry host", args: []string{"--chart-push", "oci://charts"}, wantErr: "not a registry host"},
		{name: "SOURCE_DATE_EPOCH", env: map[string]string{"SOURCE_DATE_EPOCH": "1700000000"}, check: func(t *testing.T, f flags) {
			if !f.opts.Created.Equal(time.Unix(1700000000, 0)) {
				t.Errorf("created %v", f.opts.Created)
			}
		}},
		{name: "bad SOURCE_DATE_EPOCH", env: map[string]string{"SOURCE_DATE_EPOCH": "yesterday"}, wantErr: "SOURCE_DATE_EPOCH"},
		{name: "bad platform", args: []string{"--platforms", "windows/amd64"}, wantErr: "windows/amd64"},
		{name: "stray argument", args: []string{"edge"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, err := parseFlags(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, f)
		})
	}
}
