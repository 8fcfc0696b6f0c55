package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// tenancyEnv: one docker-registry behind two token proxies — upstream
// "priv", for which the control plane holds credentials and only team-a is
// allowed, and upstream "pub", anonymous, allowed to both. Repositories
// under team/ are private at both; pub/app is public. Both namespaces'
// edges cache in one S3 bucket that only the control plane has keys for.
type tenancyEnv struct {
	s3          *harness.S3
	reg         *harness.Registry
	priv, pub   *harness.TokenProxy
	cp          *harness.ControlPlane
	secret, app harness.Image
	upPass      string
	adminToken  string
	edgeTokens  map[string]string
	pullTokens  map[string]string
	edges       map[string]*harness.Edge
	stateDirs   map[string]string
}

// newTenancyEnv starts everything; edgeArgs are added to both edges.
func newTenancyEnv(t *testing.T, edgeArgs ...string) *tenancyEnv {
	t.Helper()
	e := &tenancyEnv{
		upPass: "upstream-pass-" + cpSecret(t), adminToken: "admin-" + cpSecret(t),
		edgeTokens: map[string]string{"team-a": "edge-a-" + cpSecret(t), "team-b": "edge-b-" + cpSecret(t)},
		pullTokens: map[string]string{"team-a": "pull-a-" + cpSecret(t), "team-b": "pull-b-" + cpSecret(t)},
		edges:      map[string]*harness.Edge{}, stateDirs: map[string]string{},
	}
	e.s3 = harness.StartS3(t)
	e.reg = harness.StartDockerRegistry(t)
	e.priv = harness.StartTokenProxy(t, e.reg.URL, "-user", "tester:"+e.upPass, "-private", "team/")
	e.pub = harness.StartTokenProxy(t, e.reg.URL, "-private", "team/")
	e.secret = harness.PushImage(t, e.reg.Addr, "team/secret", "v1", types.OCIManifestSchema1, 2, 64<<10)
	e.app = harness.PushImage(t, e.reg.Addr, "pub/app", "v1", types.OCIManifestSchema1, 2, 64<<10)

	dir := t.TempDir()
	keyFile, secretFile := filepath.Join(dir, "access-key-id"), filepath.Join(dir, "secret-access-key")
	for path, v := range map[string]string{keyFile: e.s3.Access, secretFile: e.s3.Secret} {
		if err := os.WriteFile(path, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e.cp = harness.StartControlPlane(t, fmt.Sprintf(`adminTokens: [%q]
upstreams:
  - {prefix: priv, url: %q, credentials: {username: tester, password: %q}}
  - {prefix: pub, url: %q, hosts: [pub.registry.test]}
namespaces:
  team-a: {edgeToken: %q, pullToken: %q, allowedPrefixes: [priv, pub]}
  team-b: {edgeToken: %q, pullToken: %q, allowedPrefixes: [pub]}
storage:
  s3: {bucket: %s, region: %s, endpoint: %q, pathStyle: true, accessKeyIdFile: %q, secretAccessKeyFile: %q}
`, e.adminToken, e.priv.URL, e.upPass, e.pub.URL,
		e.edgeTokens["team-a"], e.pullTokens["team-a"], e.edgeTokens["team-b"], e.pullTokens["team-b"],
		e.s3.Bucket, e.s3.Region, e.s3.Endpoint, keyFile, secretFile), "--proof-ttl", "3s")
	for _, ns := range []string{"team-a", "team-b"} {
		tokenFile := filepath.Join(dir, ns+"-edge-token")
		if err := os.WriteFile(tokenFile, []byte(e.edgeTokens[ns]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		e.stateDirs[ns] = filepath.Join(dir, ns+"-state")
		e.edges[ns] = harness.StartEdgeWith(t, harness.EdgeOptions{
			Args: append([]string{"--namespace", ns, "--control-plane", e.cp.Addr, "--control-plane-token-file", tokenFile,
				"--storage=control-plane", "--state-dir", e.stateDirs[ns], "--log-level", "debug"}, edgeArgs...),
			// No storage credentials anywhere near the edge.
			Env: []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_SESSION_TOKEN=", "AWS_PROFILE=",
				"AWS_EC2_METADATA_DISABLED=true"},
		})
	}
	for ns, edge := range e.edges {
		if r := edge.WaitReadiness(t, ns+" ready on brokered storage", syncTimeout, func(r harness.EdgeReadiness) bool {
			return r.Ready && r.ControlPlane == "connected"
		}); !r.Ready {
			t.Fatalf("%s readyz: %+v", ns, r)
		}
	}
	return e
}

// crane runs crane as a client of ns's edge (its pull token) against the
// edge of edgeNS.
func (e *tenancyEnv) crane(t *testing.T, ns, edgeNS string, args ...string) ([]byte, error) {
	t.Helper()
	env := []string{"DOCKER_CONFIG=" + harness.DockerConfig(t, e.edges[edgeNS].Addr, "puller", e.pullTokens[ns])}
	return harness.CraneEnv(t, env, args...)
}

// get is a raw registry request to ns's edge with ns's pull token.
func (e *tenancyEnv) get(t *testing.T, method, ns, edgeNS, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+e.edges[edgeNS].Addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("puller:"+e.pullTokens[ns])))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// blobGETs counts the upstream registry's blob GETs for repo so far.
func (e *tenancyEnv) blobGETs(t *testing.T, repo string) int {
	return harness.RegistryRequests(t, e.reg.Proc, "GET", "/v2/"+repo+"/blobs/")
}

// refusals are every way team-b could ask for team-a's private image.
func (e *tenancyEnv) refusals(t *testing.T, when string) {
	t.Helper()
	layer := e.secret.Layers[0]
	for _, tc := range []struct{ name, method, edgeNS, path string }{
		{"tag via pub", "GET", "team-b", "/v2/pub/team/secret/manifests/v1"},
		{"manifest digest via pub", "GET", "team-b", "/v2/pub/team/secret/manifests/" + e.secret.Digest},
		{"manifest digest via a public repository", "GET", "team-b", "/v2/pub/pub/app/manifests/" + e.secret.Digest},
		{"blob digest via pub", "GET", "team-b", "/v2/pub/team/secret/blobs/" + layer},
		{"blob digest via a public repository", "GET", "team-b", "/v2/pub/pub/app/blobs/" + layer},
		{"HEAD blob via a public repository", "HEAD", "team-b", "/v2/pub/pub/app/blobs/" + layer},
		{"HEAD manifest via pub", "HEAD", "team-b", "/v2/pub/team/secret/manifests/" + e.secret.Digest},
		{"priv, not allowed", "GET", "team-b", "/v2/priv/team/secret/manifests/" + e.secret.Digest},
		{"mirror mode ?ns=", "GET", "team-b", "/v2/team/secret/manifests/" + e.secret.Digest + "?ns=" + strings.TrimPrefix(e.priv.URL, "http://")},
		{"mirror mode ?ns= blob", "GET", "team-b", "/v2/team/secret/blobs/" + layer + "?ns=pub.registry.test"},
		{"team-a's edge with team-b's token", "GET", "team-a", "/v2/priv/team/secret/manifests/" + e.secret.Digest},
	} {
		code, body := e.get(t, tc.method, "team-b", tc.edgeNS, tc.path)
		if code < 400 {
			t.Errorf("%s: team-b %s %s on %s's edge: %d, want a refusal", when, tc.name, tc.path, tc.edgeNS, code)
		}
		if tc.method == "GET" && !strings.Contains(body, `"errors"`) {
			t.Errorf("%s: %s: %d without OCI error JSON: %.200q", when, tc.name, code, body)
		}
	}
}

func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	e := newTenancyEnv(t)

	// team-a pulls its private image through its edge; it lands in S3.
	if out, err := e.crane(t, "team-a", "team-a", "pull", "--format=oci", e.secret.Ref(e.edges["team-a"].Addr, "priv"), t.TempDir()); err != nil {
		t.Fatalf("team-a pulls its private image: %v\n%s", err, out)
	}
	keys := strings.Join(e.s3.Keys(t, ""), "\n")
	for _, d := range e.secret.Blobs() {
		if !strings.Contains(keys, "blobs/"+strings.Replace(d, ":", "/", 1)) {
			t.Errorf("blob %s of the private image was not cached; keys:\n%s", d, keys)
		}
	}
	e.refusals(t, "after team-a pulled")

	// What team-b's edge holds: no S3 keys, no credentials of priv.
	b, err := os.ReadFile(filepath.Join(e.stateDirs["team-b"], "edge-config.json"))
	if err != nil {
		t.Fatalf("team-b's persisted configuration: %v", err)
	}
	for name, s := range map[string]string{"S3 access key": e.s3.Access, "S3 secret": e.s3.Secret, "priv's password": e.upPass} {
		for what, text := range map[string]string{"state file": string(b), "log": e.edges["team-b"].Proc.LogTail(1 << 20)} {
			if strings.Contains(text, s) {
				t.Errorf("team-b's edge %s holds the %s", what, name)
			}
		}
	}
	if strings.Contains(string(b), "priv") {
		t.Errorf("team-b's configuration names upstream priv, outside its allowed set:\n%s", b)
	}

	// Everything team-b's edge holds is team-b's: with the edge's own
	// token (what a pod running as the edge's ServiceAccount mounts), the
	// storage broker grants none of team-a's content and takes no write of
	// team-a's records, whatever the caller claims.
	e.brokerRefusals(t)

	// A public image pulled by team-a is served to team-b with no second
	// blob download.
	if out, err := e.crane(t, "team-a", "team-a", "pull", "--format=oci", e.app.Ref(e.edges["team-a"].Addr, "pub"), t.TempDir()); err != nil {
		t.Fatalf("team-a pulls the public image: %v\n%s", err, out)
	}
	before := e.blobGETs(t, "pub/app")
	if out, err := e.crane(t, "team-b", "team-b", "pull", "--format=oci", e.app.Ref(e.edges["team-b"].Addr, "pub"), t.TempDir()); err != nil {
		t.Fatalf("team-b pulls the public image: %v\n%s", err, out)
	}
	if after := e.blobGETs(t, "pub/app"); after != before {
		t.Errorf("team-b's pull of the public image downloaded %d blobs again", after-before)
	}

	// Upstream down: public content still shared (by digest: team-b has
	// no tag record of its own for it); private content still refused.
	e.priv.Stop()
	e.pub.Stop()
	if out, err := e.crane(t, "team-b", "team-b", "pull", "--format=oci", e.app.DigestRef(e.edges["team-b"].Addr, "pub"), t.TempDir()); err != nil {
		t.Errorf("team-b pulls the public image by digest with the upstream down: %v\n%s", err, out)
	}
	e.refusals(t, "with the upstream down")
	if out, err := e.crane(t, "team-a", "team-a", "pull", "--format=oci", e.secret.DigestRef(e.edges["team-a"].Addr, "priv"), t.TempDir()); err != nil {
		t.Errorf("team-a pulls its cached private image with the upstream down: %v\n%s", err, out)
	}
}

// TestRevokedCredentialStopsServing: team-a's cached private image is
// served while its proof holds; once the credentials the control plane
// proves with no longer work, the next proof fails and team-a's edge is
// refused the shared copy (and cannot fetch it upstream either). With
// --proof-ttl 3s and --storage-grant-ttl 1s that happens within seconds.
func TestRevokedCredentialStopsServing(t *testing.T) {
	t.Parallel()
	e := newTenancyEnv(t, "--storage-grant-ttl", "1s")
	ref := e.secret.DigestRef(e.edges["team-a"].Addr, "priv")
	if out, err := e.crane(t, "team-a", "team-a", "pull", "--format=oci", ref, t.TempDir()); err != nil {
		t.Fatalf("team-a pulls its private image: %v\n%s", err, out)
	}
	r := e.cp.AdminCall(t, e.adminToken, "PutUpstream", fmt.Sprintf(
		`{"upstream":{"prefix":"priv","url":%q,"credentials":{"username":"tester","password":"revoked"}}}`, e.priv.URL))
	if r.Err != nil {
		t.Fatalf("%s: %v\n%s", r.Cmd, r.Err, r.Output())
	}
	start := time.Now()
	waitUntil(t, "team-a refused its private image after the credential was revoked", syncTimeout, func() bool {
		code, _ := e.get(t, "GET", "team-a", "team-a", "/v2/priv/team/secret/manifests/"+e.secret.Digest)
		return code >= 400
	}, nil)
	t.Logf("refused %s after the revocation (proof TTL 3s, grant TTL 1s)", time.Since(start).Round(100*time.Millisecond))
	for _, d := range e.secret.Blobs() {
		if code, _ := e.get(t, "GET", "team-a", "team-a", "/v2/priv/team/secret/blobs/"+d); code < 400 {
			t.Errorf("blob %s still served after the revocation: %d", d, code)
		}
	}
}

// brokerRefusals calls the control plane's storage broker with team-b's
// edge token, as grpcurl would from a pod holding it.
func (e *tenancyEnv) brokerRefusals(t *testing.T) {
	t.Helper()
	tok := e.edgeTokens["team-b"]
	hexOf := func(d string) string { return strings.TrimPrefix(d, "sha256:") }
	tag := "tenants/team-a/priv/team/secret/_tags/v1"
	call := func(method string, stdin []byte, body string) harness.GrpcurlResult {
		// -format-error prints the status with its details (the reason).
		args := []string{"-plaintext", "-format-error", "-H", "authorization: Bearer " + tok}
		if body != "" {
			args = append(args, "-d", body)
		} else {
			args = append(args, "-d", "@")
		}
		return harness.Grpcurl(t, stdin, append(args, e.cp.Addr, "selfhost.v1.StorageBrokerService/"+method)...)
	}
	for _, tc := range []struct {
		name, method, body, reason string
		stdin                      []byte
	}{
		{"read team-a's private manifest", "Authorize", fmt.Sprintf(`{"key":"manifests/sha256/%s","scope":{"prefix":"pub","repository":"team/secret"}}`, hexOf(e.secret.Digest)), "NO_PROOF", nil},
		{"read team-a's private layer via a public repository", "Authorize", fmt.Sprintf(`{"key":"blobs/sha256/%s","scope":{"prefix":"pub","repository":"pub/app"}}`, hexOf(e.secret.Layers[0])), "NO_PROOF", nil},
		{"read through priv, not allowed", "Authorize", fmt.Sprintf(`{"key":"manifests/sha256/%s","scope":{"prefix":"priv","repository":"team/secret"}}`, hexOf(e.secret.Digest)), "UNKNOWN_UPSTREAM", nil},
		{"read team-a's tag record", "Authorize", fmt.Sprintf(`{"key":%q}`, tag), "OTHER_NAMESPACE", nil},
		{"delete team-a's tag record", "DeleteObject", fmt.Sprintf(`{"key":%q}`, tag), "OTHER_NAMESPACE", nil},
		{"list team-a's records", "ListObjects", `{"prefix":"tenants/team-a/"}`, "OTHER_NAMESPACE", nil},
		{"overwrite team-a's tag record", "PutObject", "", "OTHER_NAMESPACE",
			[]byte(fmt.Sprintf(`{"header":{"key":%q}} {"data":"e30="}`, tag))},
		{"write a shared layer of bytes that are not it", "PutObject", "", "NO_PROOF",
			[]byte(fmt.Sprintf(`{"header":{"key":"blobs/sha256/%s","digest":%q,"size":4,"scope":{"prefix":"pub","repository":"team/secret"}}} {"data":"cG9pcw=="}`, hexOf(e.secret.Layers[0]), e.secret.Layers[0]))},
		{"write a proof", "PutObject", "", "INVALID_KEY",
			[]byte(fmt.Sprintf(`{"header":{"key":"proofs/public/priv/team/secret/_m/sha256/%s"}} {"data":"eA=="}`, hexOf(e.secret.Digest)))},
	} {
		r := call(tc.method, tc.stdin, tc.body)
		// -format-error prints the status as JSON: code 7 is PermissionDenied.
		var st struct {
			Code    int
			Details []struct{ Reason string }
		}
		_ = json.Unmarshal([]byte(r.Stderr), &st)
		if r.Err == nil || st.Code != 7 || len(st.Details) != 1 || st.Details[0].Reason != tc.reason {
			t.Errorf("team-b's edge token: %s: got %+v, want PermissionDenied %s\n%s", tc.name, st, tc.reason, r.Output())
		}
		e.noSecretIn(t, "broker answer to team-b", r.Output())
	}
}

// noSecretIn fails when text holds a secret of the environment.
func (e *tenancyEnv) noSecretIn(t *testing.T, what, text string) {
	t.Helper()
	for name, s := range map[string]string{"S3 access key": e.s3.Access, "S3 secret": e.s3.Secret, "priv's password": e.upPass} {
		if strings.Contains(text, s) {
			t.Errorf("%s holds the %s", what, name)
		}
	}
}
