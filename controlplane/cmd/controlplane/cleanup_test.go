package main

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/uninstall"
)

func TestParseCleanupFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    cleanupFlags
		wantErr string
	}{
		{"defaults", []string{"--namespace", "sys"}, nil,
			cleanupFlags{namespace: "sys", deployment: uninstall.DefaultDeployment, timeout: 3 * time.Minute}, ""},
		{"namespace from the chart's environment", nil, map[string]string{"CONTROLPLANE_NAMESPACE": "sys", "CONTROLPLANE_CLEANUP_TIMEOUT": "90s"},
			cleanupFlags{namespace: "sys", deployment: uninstall.DefaultDeployment, timeout: 90 * time.Second}, ""},
		{"everything", []string{"--namespace=sys", "--deployment=cp", "--timeout=10s", "--kubeconfig=/k"}, nil,
			cleanupFlags{namespace: "sys", deployment: "cp", timeout: 10 * time.Second, kubeconfig: "/k"}, ""},
		{"no namespace", nil, nil, cleanupFlags{}, "--namespace is required"},
		{"zero timeout", []string{"--namespace=sys", "--timeout=0s"}, nil, cleanupFlags{}, "--timeout"},
		{"bad env timeout", []string{"--namespace=sys"}, map[string]string{"CONTROLPLANE_CLEANUP_TIMEOUT": "soon"}, cleanupFlags{}, "CONTROLPLANE_CLEANUP_TIMEOUT"},
		{"server flag refused", []string{"--namespace=sys", "--edge-image=e"}, nil, cleanupFlags{}, "edge-image"},
		{"stray argument", []string{"--namespace=sys", "now"}, nil, cleanupFlags{}, "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, _, err := parseCleanupFlags(tc.args, environ(tc.env), &bytes.Buffer{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestCleanupHelp(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	_, _, err := parseCleanupFlags([]string{"--help"}, nil, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	for _, s := range []string{"-namespace", "-deployment", "-timeout", "-kubeconfig", "k8s-selfhost-repo-injector", "managed-by=k8s-selfhost-repo-controlplane"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("help does not mention %s", s)
		}
	}
}
