package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestControlPlaneUpstreamChangeWithoutRestart: an upstream added with
// grpcurl is used by the next pull through a running edge. Before the
// change the prefix is unknown to the edge (NAME_UNKNOWN); after it, the
// image of the second registry is pulled through the same edge process.
func TestControlPlaneUpstreamChangeWithoutRestart(t *testing.T) {
	t.Parallel()
	e := newCPEnv(t)
	reg2 := harness.StartDockerRegistry(t)
	img2 := harness.PushImage(t, reg2.Addr, "other/img", "v2", types.DockerManifestSchema2, 2, 64<<10)
	edge := e.startEdge(t, "team-a", "team-a")
	before := e.waitSynced(t, edge, "team-a")
	proc := edge.Proc
	ref := img2.Ref(edge.Addr, "test2")
	env := e.craneEnv(t, edge, "team-a")
	manifestURL := edge.URL + "/v2/test2/" + img2.Repo + "/manifests/" + img2.Tag

	t.Run("before: NAME_UNKNOWN", func(t *testing.T) {
		wantError(t, do(t, http.MethodGet, manifestURL, e.authHeader("team-a")), []int{http.StatusNotFound}, "NAME_UNKNOWN")
		if _, err := harness.CraneEnv(t, env, "manifest", ref); err == nil {
			t.Errorf("crane manifest %s succeeded before test2 was configured", ref)
		}
	})

	put := e.mustAdmin(t, "PutUpstream", fmt.Sprintf(`{"upstream":{"prefix":"test2","url":%q}}`, reg2.URL), nil)
	t.Logf("%s\n%s", put.Cmd, put.Stdout)
	after := e.waitSynced(t, edge, "team-a")
	if after == before {
		t.Fatalf("team-a version unchanged (%s) by PutUpstream test2", after)
	}

	t.Run("after: pull succeeds", func(t *testing.T) {
		got, err := harness.CraneEnv(t, env, "manifest", ref)
		if err != nil {
			t.Fatalf("crane manifest %s after PutUpstream: %v", ref, err)
		}
		if !bytes.Equal(got, img2.Manifest) {
			t.Errorf("crane manifest %s differs from the image in the second registry", ref)
		}
		for _, d := range img2.Blobs() {
			r := do(t, http.MethodGet, edge.URL+"/v2/test2/"+img2.Repo+"/blobs/"+d, e.authHeader("team-a"))
			if r.status != http.StatusOK || r.bodyErr != nil || harness.SHA256(r.body) != d {
				t.Errorf("blob %s through test2: status %d, error %v", d, r.status, r.bodyErr)
			}
		}
	})

	t.Run("same edge process, ACK recorded", func(t *testing.T) {
		if edge.Proc != proc || proc.Exited() {
			t.Errorf("the edge was restarted; the change must apply to the running process")
		}
		s := listedEdge(e.listEdges(t), edge.Addr)
		if s == nil || s.GetAckedVersion() != after {
			t.Errorf("ListEdges shows %v, want acked version %s", s, after)
		}
	})
}

// TestControlPlaneNamespaceFromToken: the token decides the namespace, not
// the hello. A real edge started for team-b with team-a's token gets no
// configuration at all; with team-a's token and --namespace team-a it gets
// team-a's.
func TestControlPlaneNamespaceFromToken(t *testing.T) {
	t.Parallel()
	e := newCPEnv(t)

	t.Run("edge claiming another namespace", func(t *testing.T) {
		sneaky := e.startEdge(t, "team-b", "team-a")
		waitCPLog(t, sneaky.Proc, "control plane rejected the edge's credentials")
		log := sneaky.Proc.LogTail(1 << 20)
		for _, want := range []string{`"code":"PermissionDenied"`, `hello.namespace \"team-b\" does not match the token's namespace`} {
			if !strings.Contains(log, want) {
				t.Errorf("edge log does not say %s", want)
			}
		}
		// Retries are refused too: watch for a while that nothing arrives.
		for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if r := sneaky.Readiness(t); r.ControlPlane != "disconnected" || r.ConfigVersion != "" || r.Code != http.StatusServiceUnavailable {
				t.Fatalf("edge with another namespace's token: /readyz %+v, want 503, disconnected with no config version", r)
			}
		}
		if s := listedEdge(e.listEdges(t), sneaky.Addr); s != nil {
			t.Errorf("ListEdges shows the refused edge: %v", s)
		}
		// It fails closed (not even the flag defaults are served) and
		// persists nothing.
		wantError(t, do(t, http.MethodGet, sneaky.URL+"/v2/test/cp/app/manifests/v1", nil), []int{http.StatusServiceUnavailable}, "UNAVAILABLE")
		if _, err := os.Stat(filepath.Join(sneaky.Storage, "_state", "team-b", "edge-config.json")); !os.IsNotExist(err) {
			t.Errorf("the refused edge persisted a configuration (stat: %v)", err)
		}
		e.noSecrets(t, "the refused edge's log", log)
	})

	t.Run("grpcurl claiming another namespace", func(t *testing.T) {
		hello := []byte(`{"hello":{"namespace":"team-a","pod":"sneaky"}}`)
		for _, c := range []struct{ name, token, part string }{
			{"team-b's token", e.edgeTokens["team-b"], `hello.namespace "team-a" does not match the token's namespace`},
			{"admin token", e.adminToken, "an admin token cannot open an edge config stream"},
		} {
			r := harness.Grpcurl(t, hello, "-plaintext", "-H", "authorization: Bearer "+c.token, "-d", "@",
				e.cp.Addr, "selfhost.v1.ConfigDiscoveryService/StreamConfig")
			wantGRPCStatus(t, r, "PermissionDenied", c.part)
			if strings.Contains(r.Stdout, "config") {
				t.Errorf("%s: a configuration was sent:\n%s", c.name, r.Stdout)
			}
		}
	})

	t.Run("edge of its own namespace", func(t *testing.T) {
		good := e.startEdge(t, "team-a", "team-a")
		v := e.waitSynced(t, good, "team-a")
		s := listedEdge(e.listEdges(t), good.Addr)
		if s == nil || s.GetNamespace() != "team-a" || s.GetAckedVersion() != v {
			t.Errorf("ListEdges shows %v, want team-a acked %s", s, v)
		}
		got, err := harness.CraneEnv(t, e.craneEnv(t, good, "team-a"), "manifest", e.img.Ref(good.Addr, prefix))
		if err != nil || !bytes.Equal(got, e.img.Manifest) {
			t.Errorf("pull through the team-a edge: %v", err)
		}
	})
}
