package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/configclient/controltest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream/upstreamtest"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

const wait = 5 * time.Second

// newUpstream serves repository org/app with one tag, named so a response
// shows which upstream answered.
func newUpstream(t *testing.T, tag string) string {
	t.Helper()
	reg := upstreamtest.NewRegistry()
	reg.PutManifest("org/app", tag, oci.MediaTypeOCIManifest, []byte(`{"schemaVersion":2,"from":"`+tag+`"}`))
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	return srv.URL
}

// startEdge runs the whole edge until stop is called or the test ends.
func startEdge(t *testing.T, cfg Config) (addr string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { done <- Run(ctx, cfg, log, func(a string) { ready <- a }) }()
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("edge did not start: %v", err)
	case <-time.After(wait):
		t.Fatal("edge did not start")
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return addr, stop
}

func get(t *testing.T, url, password string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if password != "" {
		req.SetBasicAuth("pull", password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

func ready(t *testing.T, addr string) readyStatus {
	t.Helper()
	_, body, _ := get(t, "http://"+addr+"/readyz", "")
	var st readyStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("readyz %q: %v", body, err)
	}
	return st
}

func snapshot(version, upstreamURL string, policy *selfhostv1.NamespacePolicy) *selfhostv1.EdgeConfig {
	return &selfhostv1.EdgeConfig{
		Version: version, Namespace: "team-a", Policy: policy,
		Upstreams: []*selfhostv1.Upstream{
			{Prefix: "test", Url: upstreamURL, TagTtl: durationpb.New(time.Hour)},
			{Prefix: "ghcr", Url: "https://ghcr.io"},
		},
	}
}

// TestControlPlaneEndToEnd drives a whole edge through a fake control
// plane: flag defaults, a snapshot with a policy, a NACKed snapshot that
// leaves the old routes serving, a switch of upstream, stats, a tag
// invalidation, and a restart with the control plane gone.
func TestControlPlaneEndToEnd(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp := controltest.Start(t, lis)
	cp.RequireTokens("edge-token-91ab")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("edge-token-91ab\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	upA, upB := newUpstream(t, "from-a"), newUpstream(t, "from-b")
	storage := t.TempDir()
	cfg := Config{
		Listen: "127.0.0.1:0", Storage: storage, Namespace: "team-a", TagTTL: time.Minute,
		ControlPlane: lis.Addr().String(), ControlPlaneTokenFile: tokenFile, PodName: "edge-0",
		StatsInterval: 30 * time.Millisecond, Version: "test",
	}
	addr, stop := startEdge(t, cfg)
	base := "http://" + addr + "/v2/test/org/app"

	hello := controltest.Next(t, cp.Hellos, wait)
	if hello.Msg.GetNamespace() != "team-a" || hello.Msg.GetPod() != "edge-0" || hello.Msg.GetAddress() != addr ||
		hello.Msg.GetEdgeVersion() != "test" || hello.Token != "edge-token-91ab" {
		t.Fatalf("hello %v token %q", hello.Msg, hello.Token)
	}
	// Fail closed until the first snapshot: neither the flag defaults nor
	// an anonymous /v2/ are served.
	for _, u := range []string{base + "/tags/list", "http://" + addr + "/v2/", "http://" + addr + "/v2/ghcr/org/app/manifests/latest"} {
		if code, body, _ := get(t, u, ""); code != 503 || !strings.Contains(body, "UNAVAILABLE") {
			t.Fatalf("%s before config: %d %s", u, code, body)
		}
	}
	if code, body, _ := get(t, "http://"+addr+"/readyz", ""); code != 503 || !strings.Contains(body, `"config":"waiting"`) {
		t.Fatalf("readyz before config: %d %s", code, body)
	}
	if st := ready(t, addr); st.ControlPlane != "disconnected" || st.ConfigVersion != "" || st.Ready {
		t.Fatalf("readyz before config %+v", st)
	}
	if code, _, _ := get(t, "http://"+addr+"/healthz", ""); code != 200 {
		t.Fatalf("healthz before config: %d", code)
	}

	// v1: upstream A, a pull token and an allow-list.
	cp.SetConfig(snapshot("v1", upA, &selfhostv1.NamespacePolicy{PullToken: "pt-v1", AllowedPrefixes: []string{"test"}}))
	if ack := controltest.Next(t, cp.Acks, wait); !ack.GetAccepted() || ack.GetVersion() != "v1" {
		t.Fatalf("v1 ack %v", ack)
	}
	if code, _, h := get(t, base+"/tags/list", ""); code != 401 || h.Get("WWW-Authenticate") != `Basic realm="k8s-selfhost-repo"` {
		t.Fatalf("v1 without token: %d %v", code, h)
	}
	if code, body, _ := get(t, base+"/tags/list", "pt-v1"); code != 200 || !strings.Contains(body, "from-a") {
		t.Fatalf("v1: %d %s", code, body)
	}
	if code, body, _ := get(t, "http://"+addr+"/v2/ghcr/org/app/tags/list", "pt-v1"); code != 404 || !strings.Contains(body, "prefix not allowed") {
		t.Fatalf("v1 ghcr: %d %s", code, body)
	}
	if st := ready(t, addr); st.ControlPlane != "connected" || st.ConfigVersion != "v1" || st.LastNACK != "" || !st.Ready || st.Config != "applied" {
		t.Fatalf("readyz v1 %+v", st)
	}

	// v2 is invalid: NACKed with the field, and v1 keeps serving.
	bad := snapshot("v2", upB, nil)
	bad.Upstreams[0].Url = "ftp://" + strings.TrimPrefix(upB, "http://")
	cp.SetConfig(bad)
	if ack := controltest.Next(t, cp.Acks, wait); ack.GetAccepted() || !strings.Contains(ack.GetErrorDetail(), "upstreams[0].url") {
		t.Fatalf("v2 ack %v", ack)
	}
	if code, body, _ := get(t, base+"/tags/list", "pt-v1"); code != 200 || !strings.Contains(body, "from-a") {
		t.Fatalf("after NACK: %d %s", code, body)
	}
	if st := ready(t, addr); st.ConfigVersion != "v1" || !strings.Contains(st.LastNACK, "upstreams[0].url") {
		t.Fatalf("readyz after NACK %+v", st)
	}

	// v3: upstream B, no policy.
	cp.SetConfig(snapshot("v3", upB, nil))
	if ack := controltest.Next(t, cp.Acks, wait); !ack.GetAccepted() || ack.GetVersion() != "v3" {
		t.Fatalf("v3 ack %v", ack)
	}
	if code, body, _ := get(t, base+"/tags/list", ""); code != 200 || !strings.Contains(body, "from-b") {
		t.Fatalf("v3: %d %s", code, body)
	}

	// A miss and a hit reach the control plane as stats.
	for _, want := range []string{"MISS", "HIT"} {
		if code, _, h := get(t, base+"/manifests/from-b", ""); code != 200 || h.Get("X-Cache") != want {
			t.Fatalf("manifest: %d X-Cache %q, want %s", code, h.Get("X-Cache"), want)
		}
	}
	testkit.WaitFor(t, "stats with the hit and the miss", wait, func() bool {
		st := controltest.Next(t, cp.Stats, wait)
		return st.GetCacheHits() >= 1 && st.GetCacheMisses() >= 1 && st.GetBytesFromCache() > 0 && st.GetBytesFromUpstream() > 0
	})

	// Invalidation: the next pull of the tag goes upstream again.
	cp.InvalidateTag("test", "org/app", "from-b")
	testkit.WaitFor(t, "tag invalidated", wait, func() bool {
		_, _, h := get(t, base+"/manifests/from-b", "")
		return h.Get("X-Cache") == "MISS"
	})

	// Restart with the control plane gone: the persisted v3 serves at once.
	stop()
	cp.Stop()
	fi, err := os.Stat(filepath.Join(storage, "_state", "team-a", "edge-config.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	addr2, _ := startEdge(t, cfg)
	if code, body, _ := get(t, "http://"+addr2+"/v2/test/org/app/tags/list", ""); code != 200 || !strings.Contains(body, "from-b") {
		t.Fatalf("restarted without control plane: %d %s", code, body)
	}
	if st := ready(t, addr2); st.ControlPlane != "disconnected" || st.ConfigVersion != "v3" || !st.Ready {
		t.Fatalf("readyz after restart %+v", st)
	}
}

func TestReadyzWithoutControlPlane(t *testing.T) {
	t.Parallel()
	storage := t.TempDir()
	addr, _ := startEdge(t, Config{Listen: "127.0.0.1:0", Storage: storage, Namespace: "default", TagTTL: time.Minute})
	if st := ready(t, addr); st.ControlPlane != "disabled" || st.Mode != "caching" || st.Storage != "filesystem" {
		t.Fatalf("readyz %+v", st)
	}
	if _, err := os.Stat(filepath.Join(storage, "_state")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state dir made without a control plane: %v", err)
	}
}
