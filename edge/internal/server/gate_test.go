package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/brokerstore"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/configclient"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

type fakeStatus struct{ version atomic.Pointer[string] }

func (f *fakeStatus) Status() configclient.Status {
	v := ""
	if p := f.version.Load(); p != nil {
		v = *p
	}
	return configclient.Status{Version: v}
}

func (f *fakeStatus) set(v string) { f.version.Store(&v) }

func TestGate(t *testing.T) {
	t.Parallel()
	openStorage := func() *brokerstore.Deferred {
		conn, err := grpc.NewClient("passthrough:///unused", grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		d := brokerstore.NewDeferred(slog.New(slog.DiscardHandler), 0)
		d.Attach(conn)
		t.Cleanup(d.Close)
		commit, err := d.Prepare(&selfhostv1.StorageConfig{Brokered: &selfhostv1.BrokeredStorage{}})
		if err != nil {
			t.Fatal(err)
		}
		commit()
		return d
	}
	applied := &fakeStatus{}
	applied.set("v1")
	for _, tc := range []struct {
		name string
		g    *gate
		want string
	}{
		{"standalone", &gate{}, ""},
		{"no configuration yet", &gate{cp: &fakeStatus{}}, "configuration"},
		{"configuration applied", &gate{cp: applied}, ""},
		{"no storage yet", &gate{cp: applied, cps: brokerstore.NewDeferred(slog.New(slog.DiscardHandler), 0)}, "waiting for storage"},
		{"storage open", &gate{cp: applied, cps: openStorage()}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			why := tc.g.waiting()
			if (tc.want == "") != (why == "") || !strings.Contains(why, tc.want) {
				t.Fatalf("waiting() = %q, want %q", why, tc.want)
			}
			rec := httptest.NewRecorder()
			tc.g.guard(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(299) })).
				ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/", nil))
			if tc.want == "" && rec.Code != 299 {
				t.Fatalf("open gate answered %d", rec.Code)
			}
			if tc.want != "" && (rec.Code != 503 || !strings.Contains(rec.Body.String(), `"UNAVAILABLE"`) || rec.Header().Get("Retry-After") == "") {
				t.Fatalf("closed gate answered %d %v %s", rec.Code, rec.Header(), rec.Body)
			}
		})
	}
	// Once open, the gate stays open.
	cs := &fakeStatus{}
	g := &gate{cp: cs}
	cs.set("v1")
	if g.waiting() != "" {
		t.Fatal("not open after the configuration")
	}
	cs.set("")
	if g.waiting() != "" {
		t.Fatal("closed again")
	}
}

func TestReadiness(t *testing.T) {
	t.Parallel()
	storageDown := errors.New("storage probe: connection refused")
	for _, tc := range []struct {
		name       string
		g          *gate
		probe      error
		drain      bool
		code       int
		status     string // storage_status
		modePrefix string
	}{
		{"ready", &gate{}, nil, false, 200, "ok", "caching"},
		{"storage down still serves", &gate{}, storageDown, false, 200, "degraded", "degraded"},
		{"waiting for configuration", &gate{cp: &fakeStatus{}}, nil, false, 503, "ok", "not ready"},
		{"waiting for storage", &gate{cps: brokerstore.NewDeferred(slog.New(slog.DiscardHandler), 0)}, nil, false, 503, "waiting", "not ready"},
		{"draining", &gate{}, nil, true, 503, "ok", "draining"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.g.draining.Store(tc.drain)
			p := &storageProbe{check: func(context.Context) error { return tc.probe }, ttl: time.Second, now: time.Now}
			rec := httptest.NewRecorder()
			readiness(tc.g, "filesystem", p, nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			var st readyStatus
			if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
				t.Fatal(err)
			}
			if rec.Code != tc.code || st.Ready != (tc.code == 200) || st.StorageStatus != tc.status ||
				!strings.HasPrefix(st.Mode, tc.modePrefix) || st.Draining != tc.drain || st.Storage != "filesystem" {
				t.Fatalf("readyz %d %s", rec.Code, rec.Body)
			}
		})
	}
}

func TestStorageProbeCached(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	calls := 0
	var result error
	p := &storageProbe{ttl: 3 * time.Second, now: func() time.Time { return now },
		check: func(context.Context) error { calls++; return result }}
	if p.result(t.Context()) != nil || calls != 1 {
		t.Fatalf("first probe: %d calls", calls)
	}
	result = errors.New("down")
	now = now.Add(2 * time.Second)
	if p.result(t.Context()) != nil || calls != 1 {
		t.Fatalf("within ttl: %d calls", calls)
	}
	now = now.Add(time.Second)
	if p.result(t.Context()) == nil || calls != 2 {
		t.Fatalf("after ttl: %d calls", calls)
	}
}

func TestStateDirPerNamespace(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg     Config
		kind    string
		want    string
		wantErr bool
	}{
		{Config{Storage: "/data", Namespace: "team-a"}, "filesystem", "/data/_state/team-a", false},
		{Config{Storage: "/data", Namespace: "team-b"}, "filesystem", "/data/_state/team-b", false},
		{Config{Storage: "s3://b/p", Namespace: "team-a"}, "s3", "edge-state/team-a", false},
		{Config{Storage: "/data", Namespace: "team-a", StateDir: "/state"}, "filesystem", "/state", false},
		{Config{Storage: "/data", Namespace: "../x"}, "filesystem", "", true},
		{Config{Storage: "/data", Namespace: "a/b"}, "filesystem", "", true},
		{Config{Storage: "/data", Namespace: ""}, "filesystem", "", true},
		{Config{Storage: "/data", Namespace: "../x", StateDir: "/state"}, "filesystem", "/state", false},
	} {
		got, err := tc.cfg.stateDir(tc.kind)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("stateDir(%+v) = %q, %v; want %q (error %v)", tc.cfg, got, err, tc.want, tc.wantErr)
		}
	}
}

// deadControlPlane is an address nothing listens on.
func deadControlPlane(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// TestFailClosedWithoutControlPlane: an edge whose control plane cannot be
// reached serves nothing on its flag defaults, and a persisted
// configuration of another namespace (a shared --state-dir) is not
// restored; one of its own namespace is.
func TestFailClosedWithoutControlPlane(t *testing.T) {
	t.Parallel()
	var upstreamRequests atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		upstreamRequests.Add(1)
		w.WriteHeader(http.StatusNotFound)
	}))
	t.Cleanup(up.Close)
	stateDir := t.TempDir()
	persist := func(ns string) {
		cfg := snapshot("v9", up.URL, nil)
		cfg.Namespace = ns
		data, err := protojson.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(stateDir, "edge-config.json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{Listen: "127.0.0.1:0", Storage: t.TempDir(), Namespace: "team-a", TagTTL: time.Minute,
		Upstreams: []string{"test=" + up.URL}, ControlPlane: deadControlPlane(t), StateDir: stateDir,
		StatsInterval: time.Hour, Version: "test"}
	for _, tc := range []struct {
		name      string
		persisted string // namespace of the state file; "" for none
		ready     bool
	}{
		{"fresh state dir", "", false},
		{"another namespace's state", "team-b", false},
		{"own namespace's state", "team-a", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.persisted != "" {
				persist(tc.persisted)
			}
			addr, stop := startEdge(t, cfg)
			defer stop()
			code, body, _ := get(t, "http://"+addr+"/readyz", "")
			if (code == 200) != tc.ready {
				t.Fatalf("readyz %d %s", code, body)
			}
			if tc.ready {
				if c, b, _ := get(t, "http://"+addr+"/v2/", ""); c != 200 {
					t.Fatalf("restored edge: /v2/ %d %s", c, b)
				}
				return
			}
			before := upstreamRequests.Load()
			for _, path := range []string{"/v2/", "/v2/test/org/app/manifests/v1", "/v2/test/org/app/blobs/sha256:" + strings.Repeat("0", 64)} {
				if c, b, _ := get(t, "http://"+addr+path, ""); c != 503 || !strings.Contains(b, "UNAVAILABLE") {
					t.Fatalf("%s: %d %s", path, c, b)
				}
			}
			if n := upstreamRequests.Load() - before; n != 0 {
				t.Fatalf("%d upstream requests while not ready", n)
			}
			if c, _, _ := get(t, "http://"+addr+"/healthz", ""); c != 200 {
				t.Fatalf("healthz %d", c)
			}
		})
	}
}
