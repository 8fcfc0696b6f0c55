package e2e

// The set-up of the control-plane tests (docs/control-protocol.md): a real
// standalone control plane, real edges that take their configuration from
// it, grpcurl as the operator, and Debian's docker-registry behind the
// token proxy as the upstream `test`.

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// syncTimeout bounds how long an edge may take to apply a pushed snapshot
// or to reconnect after a control-plane restart. A push takes milliseconds;
// a reconnect waits for the edge's jittered backoff (at most a few seconds
// after a short outage), so the margin is for a loaded 2-core CI runner.
const syncTimeout = 45 * time.Second

// upstreamUser is the user the token proxy accepts; the password is random
// per environment and only the control plane knows it.
const upstreamUser = "tester"

// cpEnv is one control plane with two namespaces, its upstream and the
// secrets of its configuration.
type cpEnv struct {
	reg *harness.Registry
	// tok is the upstream `test` as the control plane configures it: a
	// token service that wants upstreamUser:upstreamPass for the private
	// repositories under cp/.
	tok *harness.TokenProxy
	cp  *harness.ControlPlane
	// img is cp/app:v1, private: pulling it needs the credentials that
	// only the control plane gives the edge.
	img harness.Image

	adminToken, upstreamPass string
	// edgeTokens and pullTokens by namespace; team-b has no pull token.
	edgeTokens, pullTokens map[string]string

	edges atomic.Int32 // numbers pod names
}

// testHost is an extra registry host of the upstream `test`, so that
// Resolve has a non-loopback reference to rewrite.
const testHost = "registry.test.internal"

// newCPEnv starts the upstream and the control plane; edges are started
// by the tests with startEdge.
func newCPEnv(t *testing.T, cpArgs ...string) *cpEnv {
	t.Helper()
	e := &cpEnv{
		adminToken:   "admin-" + cpSecret(t),
		upstreamPass: "upstream-pass-" + cpSecret(t),
		edgeTokens:   map[string]string{"team-a": "edge-a-" + cpSecret(t), "team-b": "edge-b-" + cpSecret(t)},
		pullTokens:   map[string]string{"team-a": "pull-a-" + cpSecret(t)},
	}
	e.reg = harness.StartDockerRegistry(t)
	e.tok = harness.StartTokenProxy(t, e.reg.URL, "-user", upstreamUser+":"+e.upstreamPass, "-private", "cp/")
	e.img = harness.PushImage(t, e.reg.Addr, "cp/app", "v1", "application/vnd.oci.image.manifest.v1+json", 2, 64<<10)
	e.cp = harness.StartControlPlane(t, e.configYAML(), cpArgs...)
	return e
}

// configYAML is the standalone configuration: two public defaults (for
// Resolve and the alias checks), the test upstream with credentials and a
// 1 s tag TTL (so tag pulls keep revalidating upstream with the
// credentials from the control plane), and two namespaces.
func (e *cpEnv) configYAML() string {
	return fmt.Sprintf(`adminTokens: [%q]
upstreams:
  - {prefix: dockerhub, url: "https://registry-1.docker.io", hosts: [docker.io, index.docker.io]}
  - {prefix: quay, aliases: [quayio], url: "https://quay.io"}
  - prefix: test
    url: %q
    hosts: [%s]
    credentials: {username: %s, password: %q}
    tagTTL: 1s
namespaces:
  team-a:
    edgeToken: %q
    pullToken: %q
  team-b:
    edgeToken: %q
`, e.adminToken, e.tok.URL, testHost, upstreamUser, e.upstreamPass,
		e.edgeTokens["team-a"], e.pullTokens["team-a"], e.edgeTokens["team-b"])
}

// secrets is everything no admin response, error or log may show.
func (e *cpEnv) secrets() map[string]string {
	s := map[string]string{"admin token": e.adminToken, "upstream password": e.upstreamPass}
	for ns, tok := range e.edgeTokens {
		s["edge token of "+ns] = tok
	}
	for ns, tok := range e.pullTokens {
		s["pull token of "+ns] = tok
	}
	return s
}

// noSecrets fails when text (named what) contains a secret.
func (e *cpEnv) noSecrets(t *testing.T, what, text string) {
	t.Helper()
	for name, s := range e.secrets() {
		if strings.Contains(text, s) {
			t.Errorf("%s contains the %s", what, name)
		}
	}
}

// startEdge starts an edge for namespace ns that authenticates with the
// edge token of tokenNS (normally ns itself). The edge has no --upstream
// flags: everything beyond the four public defaults comes from the control
// plane. Stats are reported every second so ListEdges shows them quickly.
func (e *cpEnv) startEdge(t *testing.T, ns, tokenNS string, extra ...string) *harness.Edge {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "edge-token")
	if err := os.WriteFile(tokenFile, []byte(e.edgeTokens[tokenNS]+"\n"), 0o600); err != nil {
		t.Fatalf("write edge token: %v", err)
	}
	pod := fmt.Sprintf("edge-%s-%d", ns, e.edges.Add(1))
	args := append([]string{
		"--namespace", ns, "--pod-name", pod,
		"--control-plane", e.cp.Addr, "--control-plane-token-file", tokenFile,
		"--stats-interval", "1s", "--log-level", "debug",
	}, extra...)
	return harness.StartEdge(t, args...)
}

// admin runs an AdminService call with the admin token.
func (e *cpEnv) admin(t *testing.T, method, body string) harness.GrpcurlResult {
	t.Helper()
	return e.cp.AdminCall(t, e.adminToken, method, body)
}

// mustAdmin runs an admin call that must succeed and decodes its JSON
// output into out (when not nil).
func (e *cpEnv) mustAdmin(t *testing.T, method, body string, out proto.Message) harness.GrpcurlResult {
	t.Helper()
	r := e.admin(t, method, body)
	if r.Err != nil {
		t.Fatalf("%s: %v\n%s", r.Cmd, r.Err, r.Output())
	}
	if out != nil {
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(r.Stdout), out); err != nil {
			t.Fatalf("%s: output is not a %T: %v\n%s", r.Cmd, out, err, r.Stdout)
		}
	}
	return r
}

// nsVersion is the version of the namespace's current snapshot.
func (e *cpEnv) nsVersion(t *testing.T, ns string) string {
	t.Helper()
	var resp selfhostv1.GetNamespaceConfigResponse
	e.mustAdmin(t, "GetNamespaceConfig", fmt.Sprintf(`{"namespace":%q}`, ns), &resp)
	if v := resp.GetConfig().GetVersion(); v != "" {
		return v
	}
	t.Fatalf("GetNamespaceConfig %s has no version", ns)
	return ""
}

// waitSynced waits until edge runs the current snapshot of ns and is
// connected, as its /readyz says, and until the control plane has recorded
// its ACK: ListEdges shows the version as acked. The two sides are
// asynchronous (the edge applies, then ACKs), so both are awaited.
func (e *cpEnv) waitSynced(t *testing.T, edge *harness.Edge, ns string) string {
	t.Helper()
	v := e.nsVersion(t, ns)
	edge.WaitReadiness(t, "apply "+ns+" version "+v, syncTimeout, func(r harness.EdgeReadiness) bool {
		return r.ControlPlane == "connected" && r.ConfigVersion == v
	})
	e.waitEdges(t, "edge "+edge.Addr+" acked "+v, func(s []*selfhostv1.EdgeStatus) bool {
		return listedEdge(s, edge.Addr).GetAckedVersion() == v
	})
	return v
}

// listEdges returns ListEdges (all namespaces).
func (e *cpEnv) listEdges(t *testing.T) []*selfhostv1.EdgeStatus {
	t.Helper()
	var resp selfhostv1.ListEdgesResponse
	e.mustAdmin(t, "ListEdges", "{}", &resp)
	return resp.GetEdges()
}

// waitEdges polls ListEdges until ok accepts it.
func (e *cpEnv) waitEdges(t *testing.T, what string, ok func([]*selfhostv1.EdgeStatus) bool) []*selfhostv1.EdgeStatus {
	t.Helper()
	var edges []*selfhostv1.EdgeStatus
	testkit.WaitFor(t, "ListEdges: "+what, syncTimeout, func() error {
		if edges = e.listEdges(t); !ok(edges) {
			return fmt.Errorf("edges: %v", edges)
		}
		return nil
	})
	return edges
}

// listedEdge finds the edge that reports address addr.
func listedEdge(edges []*selfhostv1.EdgeStatus, addr string) *selfhostv1.EdgeStatus {
	for _, s := range edges {
		if s.GetAddress() == addr {
			return s
		}
	}
	return nil
}

// craneEnv is the environment crane needs to pull through an edge of ns:
// the namespace's pull token as Basic auth, when it has one.
func (e *cpEnv) craneEnv(t *testing.T, edge *harness.Edge, ns string) []string {
	t.Helper()
	tok, ok := e.pullTokens[ns]
	if !ok {
		// An empty config: no credentials from the machine's own file.
		return []string{"DOCKER_CONFIG=" + t.TempDir()}
	}
	return []string{"DOCKER_CONFIG=" + harness.DockerConfig(t, edge.Addr, "puller", tok)}
}

// authHeader is the Basic authorization header for raw HTTP pulls through
// an edge of ns (nil without a pull token).
func (e *cpEnv) authHeader(ns string) map[string]string {
	tok, ok := e.pullTokens[ns]
	if !ok {
		return nil
	}
	return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("puller:"+tok))}
}

// wantGRPCStatus checks a failed grpcurl call: its gRPC code, and that its
// message contains every one of parts (the field it names).
func wantGRPCStatus(t *testing.T, r harness.GrpcurlResult, code string, parts ...string) {
	t.Helper()
	if r.Err == nil {
		t.Errorf("%s succeeded, want %s:\n%s", r.Cmd, code, r.Stdout)
		return
	}
	if r.Code != code {
		t.Errorf("%s: code %q, want %s (output %q)", r.Cmd, r.Code, code, r.Output())
	}
	for _, p := range parts {
		if !strings.Contains(r.Message, p) {
			t.Errorf("%s: message %q does not contain %q", r.Cmd, r.Message, p)
		}
	}
}

// cpSecret is 32 random hex characters: unique secrets make a leak
// findable by a plain substring search.
func cpSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
