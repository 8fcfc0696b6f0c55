package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/clash"
)

// statusFunc is a ClashStatus from a function: the collector only reads.
type statusFunc func() clash.Status

func (f statusFunc) Status() clash.Status { return f() }

func TestClashCollector(t *testing.T) {
	t.Parallel()
	m := New()
	st := clash.Status{Nodes: []clash.NodeStatus{
		{Name: "hk-1", Server: "secret-host.example", Selected: true, Health: clash.Health{Alive: true, Latency: 120 * time.Millisecond}},
		{Name: "jp-2", Server: "other.example", Health: clash.Health{Alive: false, LastError: "password=hunter2"}},
		{Name: "jp-2", Server: "duplicate.example"},
	}}
	if err := m.RegisterClash(statusFunc(func() clash.Status { return st })); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	text := string(body)
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, text)
	}
	for _, want := range []string{
		`controlplane_clash_node_selected{node="hk-1"} 1`,
		`controlplane_clash_node_selected{node="jp-2"} 0`,
		`controlplane_clash_node_healthy{node="hk-1"} 1`,
		`controlplane_clash_node_healthy{node="jp-2"} 0`,
		`controlplane_clash_node_latency_seconds{node="hk-1"} 0.12`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	for _, secret := range []string{"secret-host", "hunter2", "duplicate"} {
		if strings.Contains(text, secret) {
			t.Errorf("metrics leak %q", secret)
		}
	}
}
