package harness_test

import (
	"os"
	"strings"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestControlPlaneAndGrpcurl proves that the control plane binary starts in
// standalone mode, that grpcurl reaches it, and that Kill and Start bring
// it back on the same address with its runtime changes.
func TestControlPlaneAndGrpcurl(t *testing.T) {
	t.Parallel()
	const admin = "harness-admin-token-0123456789"
	cp := harness.StartControlPlane(t, "adminTokens: [\""+admin+"\"]\nnamespaces:\n  ns: {edgeToken: harness-edge-token-0123456789}\n")
	if r := harness.Grpcurl(t, nil, "-plaintext", "-H", "authorization: Bearer "+admin, cp.Addr, "list"); r.Err != nil || !strings.Contains(r.Stdout, "selfhost.v1.AdminService") {
		t.Fatalf("%s: %v\n%s", r.Cmd, r.Err, r.Output())
	}
	if r := cp.AdminCall(t, "", "ListUpstreams", "{}"); r.Code != "Unauthenticated" {
		t.Errorf("ListUpstreams without a token: code %q, want Unauthenticated (%s)", r.Code, r.Output())
	}
	if r := cp.AdminCall(t, admin, "PutUpstream", `{"upstream":{"prefix":"h","url":"http://127.0.0.1:9"}}`); r.Err != nil {
		t.Fatalf("%s: %v\n%s", r.Cmd, r.Err, r.Output())
	}
	if _, err := os.Stat(cp.StatePath()); err != nil {
		t.Errorf("no state file after PutUpstream: %v", err)
	}
	addr, pid := cp.Addr, cp.Pid()
	cp.Kill()
	cp.Start(t)
	if cp.Addr != addr || cp.Pid() == pid {
		t.Errorf("after Kill+Start: %s pid %d, want %s and a new process", cp.Addr, cp.Pid(), addr)
	}
	if r := cp.AdminCall(t, admin, "ListUpstreams", "{}"); r.Err != nil || !strings.Contains(r.Stdout, `"prefix": "h"`) {
		t.Errorf("ListUpstreams after restart: %v\n%s", r.Err, r.Output())
	}
}
