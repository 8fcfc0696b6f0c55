package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestControlPlaneKilledDuringPulls: the control plane is not in the data
// path. It is SIGKILLed and restarted while two edges serve a loop of pulls
// (crane manifest by tag, then every blob, every 50 ms); not one pull
// fails, and afterwards both edges are connected again on the current
// versions. The test upstream's 1 s tag TTL keeps the loop revalidating
// upstream, with the credentials from the control plane, during the outage.
func TestControlPlaneKilledDuringPulls(t *testing.T) {
	t.Parallel()
	e := newCPEnv(t)
	edges := map[string]*harness.Edge{"team-a": e.startEdge(t, "team-a", "team-a"), "team-b": e.startEdge(t, "team-b", "team-b")}
	for ns, edge := range edges {
		e.waitSynced(t, edge, ns)
	}

	type result struct {
		pulls    int
		failures []string
	}
	results := map[string]*result{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for ns, edge := range edges {
		env, res := e.craneEnv(t, edge, ns), &result{}
		results[ns] = res
		pull := func() error {
			got, err := harness.CraneEnv(t, env, "manifest", e.img.Ref(edge.Addr, prefix))
			if err != nil {
				return err
			}
			if !bytes.Equal(got, e.img.Manifest) {
				return fmt.Errorf("manifest differs from upstream")
			}
			for _, d := range e.img.Blobs() {
				r := do(t, http.MethodGet, edge.URL+"/v2/"+prefix+"/"+e.img.Repo+"/blobs/"+d, e.authHeader(ns))
				if r.bodyErr != nil || r.status != http.StatusOK || harness.SHA256(r.body) != d {
					return fmt.Errorf("blob %s: status %d, error %v", d, r.status, r.bodyErr)
				}
			}
			return nil
		}
		if err := pull(); err != nil { // warm the cache before the clock starts
			t.Fatalf("%s: first pull: %v", ns, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				res.pulls++
				if err := pull(); err != nil {
					res.failures = append(res.failures, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
				}
			}
		}()
	}

	start := time.Now()
	time.Sleep(1500 * time.Millisecond)
	oldPid := e.cp.Pid()
	e.cp.Kill()
	for ns, edge := range edges {
		edge.WaitReadiness(t, ns+" edge notices the control plane is gone", 5*time.Second, func(r harness.EdgeReadiness) bool {
			return r.ControlPlane == "disconnected"
		})
	}
	time.Sleep(time.Until(start.Add(3 * time.Second)))
	e.cp.Start(t)
	restarted := time.Now()
	t.Logf("control plane killed at +1.5s (pid %d), serving again at +%v (pid %d)", oldPid, restarted.Sub(start).Round(time.Millisecond), e.cp.Pid())
	// Keep pulling until 6 s in total and at least 1.5 s past the restart,
	// when the edges reconnect.
	time.Sleep(max(time.Until(start.Add(6*time.Second)), time.Until(restarted.Add(1500*time.Millisecond))))
	close(stop)
	wg.Wait()

	t.Run("zero failed pulls", func(t *testing.T) {
		for ns, res := range results {
			t.Logf("%s: %d pulls in the loop, %d failed", ns, res.pulls, len(res.failures))
			if len(res.failures) > 0 {
				t.Errorf("%s: %d of %d pulls failed:\n%v", ns, len(res.failures), res.pulls, res.failures)
			}
			// crane takes tens of ms per run on a loaded runner; a loop that
			// barely ran would prove nothing.
			if res.pulls < 20 {
				t.Errorf("%s: only %d pulls in ~6 s", ns, res.pulls)
			}
		}
	})

	t.Run("edges resync", func(t *testing.T) {
		versions := map[string]string{}
		for ns, edge := range edges {
			versions[ns] = e.waitSynced(t, edge, ns)
		}
		e.waitEdges(t, "both edges listed again with the current versions", func(s []*selfhostv1.EdgeStatus) bool {
			for ns, edge := range edges {
				st := listedEdge(s, edge.Addr)
				if st == nil || st.GetAckedVersion() != versions[ns] || !st.GetConnectedSince().AsTime().After(restarted.Add(-time.Second)) {
					return false
				}
			}
			return true
		})
	})
}

// TestControlPlaneEdgeRestartWhileDown: an edge restarted while the control
// plane is down starts from its persisted last good configuration: the
// upstream test2 (not in its flags), the credentials of `test` and the
// namespace's pull token all still apply, for pulls it never made before.
func TestControlPlaneEdgeRestartWhileDown(t *testing.T) {
	t.Parallel()
	e := newCPEnv(t)
	reg2 := harness.StartDockerRegistry(t)
	img2 := harness.PushImage(t, reg2.Addr, "other/img", "v2", types.OCIManifestSchema1, 2, 64<<10)
	edge := e.startEdge(t, "team-a", "team-a")
	e.mustAdmin(t, "PutUpstream", fmt.Sprintf(`{"upstream":{"prefix":"test2","url":%q}}`, reg2.URL), nil)
	version := e.waitSynced(t, edge, "team-a")

	e.cp.Kill()
	edge.Restart(t)
	rd := edge.WaitReadiness(t, "restored configuration", 10*time.Second, func(r harness.EdgeReadiness) bool { return r.ConfigVersion != "" })
	if rd.ConfigVersion != version || rd.ControlPlane != "disconnected" {
		t.Fatalf("/readyz after restart without control plane: %+v, want version %s, disconnected", rd, version)
	}
	env := e.craneEnv(t, edge, "team-a")

	t.Run("pull through test2", func(t *testing.T) {
		got, err := harness.CraneEnv(t, env, "manifest", img2.Ref(edge.Addr, "test2"))
		if err != nil || !bytes.Equal(got, img2.Manifest) {
			t.Fatalf("crane manifest through test2 after restart without control plane: %v", err)
		}
		for _, d := range img2.Blobs() {
			r := do(t, http.MethodGet, edge.URL+"/v2/test2/"+img2.Repo+"/blobs/"+d, e.authHeader("team-a"))
			if r.status != http.StatusOK || harness.SHA256(r.body) != d {
				t.Errorf("blob %s through test2: status %d, error %v", d, r.status, r.bodyErr)
			}
		}
	})
	t.Run("upstream credentials persisted", func(t *testing.T) {
		got, err := harness.CraneEnv(t, env, "manifest", e.img.Ref(edge.Addr, prefix))
		if err != nil || !bytes.Equal(got, e.img.Manifest) {
			t.Errorf("crane manifest of the private image after restart without control plane: %v", err)
		}
	})
	t.Run("pull token persisted", func(t *testing.T) {
		r := do(t, http.MethodGet, edge.URL+"/v2/test2/"+img2.Repo+"/manifests/"+img2.Tag, nil)
		wantError(t, r, []int{http.StatusUnauthorized}, "UNAUTHORIZED")
	})
	t.Run("resync when the control plane is back", func(t *testing.T) {
		e.cp.Start(t)
		if v := e.waitSynced(t, edge, "team-a"); v != version {
			t.Errorf("version after the control plane returned %s, want %s", v, version)
		}
	})
}

// TestControlPlaneStateSurvivesRestart: changes made through the admin API
// are persisted (mode 0600, they hold credentials) and survive a graceful
// restart and a SIGKILL.
func TestControlPlaneStateSurvivesRestart(t *testing.T) {
	t.Parallel()
	e := newCPEnv(t)
	e.mustAdmin(t, "PutUpstream", `{"upstream":{"prefix":"kept","url":"https://kept.example","credentials":{"username":"u","password":"kept-secret-0123456789"},"tagTtl":"30s"}}`, nil)
	e.mustAdmin(t, "DeleteUpstream", `{"prefix":"quay"}`, nil)
	want := e.mustAdmin(t, "ListUpstreams", "{}", nil).Stdout
	versionA := e.nsVersion(t, "team-a")

	st, err := os.Stat(e.cp.StatePath())
	if err != nil {
		t.Fatalf("state file: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600 (it holds credentials)", st.Mode().Perm())
	}

	for _, c := range []struct {
		name    string
		restart func(t *testing.T)
	}{
		{"SIGTERM", func(t *testing.T) { e.cp.Restart(t) }},
		{"SIGKILL", func(t *testing.T) { e.cp.Kill(); e.cp.Start(t) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.restart(t)
			var list selfhostv1.ListUpstreamsResponse
			r := e.mustAdmin(t, "ListUpstreams", "{}", &list)
			if r.Stdout != want {
				t.Errorf("ListUpstreams after restart:\n%s\nwant:\n%s", r.Stdout, want)
			}
			var kept *selfhostv1.UpstreamInfo
			for _, u := range list.GetUpstreams() {
				if u.GetPrefix() == "kept" {
					kept = u
				}
			}
			if kept == nil || !kept.GetHasCredentials() || kept.GetTagTtl().AsDuration() != 30*time.Second {
				t.Errorf("upstream kept after restart: %v, want it with credentials and a 30s tag TTL", kept)
			}
			if v := e.nsVersion(t, "team-a"); v != versionA {
				t.Errorf("team-a version after restart %s, want %s (same content, same version)", v, versionA)
			}
			e.noSecrets(t, r.Cmd, r.Output())
			if strings.Contains(r.Output(), "kept-secret") {
				t.Errorf("ListUpstreams shows the password of upstream kept")
			}
		})
	}
}
