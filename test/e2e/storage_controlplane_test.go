package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestControlPlaneStorage: the shared S3 storage reaches the edge over the
// authenticated stream, never through its flags or environment. The
// standalone control plane reads storage.s3 (credentials from files) from
// its configuration; an edge started with --storage=control-plane and no
// AWS variables at all opens the bucket with what it received, caches a
// pull there, keeps the credentials out of its state file and its log, and
// the admin API never shows them.
func TestControlPlaneStorage(t *testing.T) {
	t.Parallel()
	s3 := harness.StartS3(t)
	reg := harness.StartDockerRegistry(t)
	img := harness.PushImage(t, reg.Addr, "shared/app", "v1", "application/vnd.oci.image.manifest.v1+json", 2, 64<<10)

	dir := t.TempDir()
	keyFile, secretFile := filepath.Join(dir, "access-key-id"), filepath.Join(dir, "secret-access-key")
	for path, v := range map[string]string{keyFile: s3.Access, secretFile: s3.Secret} {
		if err := os.WriteFile(path, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	adminToken, edgeToken := "admin-"+cpSecret(t), "edge-"+cpSecret(t)
	const s3Prefix = "cp-shared"
	cp := harness.StartControlPlane(t, fmt.Sprintf(`adminTokens: [%q]
upstreams:
  - {prefix: %s, url: %q}
namespaces:
  team-a: {edgeToken: %q}
storage:
  s3:
    bucket: %s
    prefix: %s
    region: %s
    endpoint: %q
    pathStyle: true
    accessKeyIdFile: %q
    secretAccessKeyFile: %q
`, adminToken, prefix, reg.URL, edgeToken, s3.Bucket, s3Prefix, s3.Region, s3.Endpoint, keyFile, secretFile))

	tokenFile, stateDir := filepath.Join(dir, "edge-token"), filepath.Join(dir, "edge-state")
	if err := os.WriteFile(tokenFile, []byte(edgeToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	edge := harness.StartEdgeWith(t, harness.EdgeOptions{
		Args: []string{"--namespace", "team-a", "--control-plane", cp.Addr, "--control-plane-token-file", tokenFile,
			"--storage=control-plane", "--state-dir", stateDir, "--log-level", "debug"},
		// No credentials in the edge's environment: only the stream can
		// give it any (empty values count as unset for the AWS SDK).
		Env: []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_SESSION_TOKEN=", "AWS_PROFILE=",
			"AWS_EC2_METADATA_DISABLED=true"},
	})
	if r := edge.WaitReadiness(t, "caching on the control plane's S3 storage", syncTimeout, func(r harness.EdgeReadiness) bool {
		return r.Mode == "caching" && r.Storage == "s3" && r.ControlPlane == "connected"
	}); r.Error != "" {
		t.Fatalf("readyz: %+v", r)
	}

	blobs := harness.CranePullOCI(t, img.Ref(edge.Addr, prefix))
	for _, d := range img.Blobs() {
		if _, ok := blobs[d]; !ok {
			t.Errorf("pull through the edge lacks blob %s", d)
		}
	}
	keys := strings.Join(s3.Keys(t, s3Prefix+"/"), "\n")
	for _, d := range img.Layers {
		if !strings.Contains(keys, "blobs/"+strings.Replace(d, ":", "/", 1)) {
			t.Errorf("layer %s not cached under s3://%s/%s; keys:\n%s", d, s3.Bucket, s3Prefix, keys)
		}
	}

	secrets := map[string]string{"S3 access key": s3.Access, "S3 secret": s3.Secret}
	noSecret := func(what, text string) {
		t.Helper()
		for name, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s contains the %s", what, name)
			}
		}
	}
	state, err := os.ReadFile(filepath.Join(stateDir, "edge-config.json"))
	if err != nil {
		t.Fatalf("persisted configuration: %v", err)
	}
	if !strings.Contains(string(state), s3.Bucket) {
		t.Errorf("persisted configuration has no storage:\n%s", state)
	}
	noSecret("the edge's persisted configuration", string(state))

	got := cp.AdminCall(t, adminToken, "GetNamespaceConfig", `{"namespace": "team-a"}`)
	if got.Err != nil || !strings.Contains(got.Stdout, s3.Endpoint) || !strings.Contains(got.Stdout, `"pathStyle": true`) {
		t.Fatalf("%s: %v\n%s", got.Cmd, got.Err, got.Output())
	}
	noSecret("GetNamespaceConfig", got.Output())
	noSecret("the edge's log", edge.Proc.LogTail(1<<20))
	noSecret("the control plane's log", cp.Proc.LogTail(1<<20))
}
