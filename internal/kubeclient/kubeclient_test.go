package kubeclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	if err := os.WriteFile(good, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // never inside a pod here
	for _, tc := range []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"kubeconfig", Options{Kubeconfig: good, UserAgent: "test", QPS: 50, Burst: 100}, ""},
		{"no user agent", Options{Kubeconfig: good}, "no user agent"},
		{"missing file", Options{Kubeconfig: filepath.Join(dir, "absent"), UserAgent: "test"}, "--kubeconfig"},
		{"not in a pod", Options{UserAgent: "test"}, "outside a pod, give --kubeconfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.opts)
			if tc.wantErr == "" {
				if err != nil || c == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
