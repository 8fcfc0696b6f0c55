package clash

import (
	"errors"
	"strings"
	"testing"
	"time"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

func TestManagerSelectAndMode(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ctx := t.Context()
	if _, err := h.mgr.SetMode(ctx, pinned); !errors.Is(err, ErrNoPinnedNode) {
		t.Fatalf("pinned before any fetch: %v", err)
	}
	if _, err := h.mgr.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.mgr.Select(ctx, "zz"); !errors.Is(err, ErrUnknownNode) || !strings.Contains(err.Error(), `"zz"`) {
		t.Fatalf("Select(zz) = %v", err)
	}
	if _, err := h.mgr.SetMode(ctx, pinned); !errors.Is(err, ErrNoPinnedNode) {
		t.Fatalf("pinned with no node = %v", err)
	}
	if _, err := h.mgr.SetMode(ctx, selfhostv1.ProxyMode_PROXY_MODE_UNSPECIFIED); err == nil {
		t.Fatal("unspecified mode accepted")
	}
	if _, saves := h.source.last(); saves != 0 {
		t.Fatal("a refused change was persisted")
	}

	n, err := h.mgr.Select(ctx, "c")
	if err != nil || !n.Selected || n.Name != "c" {
		t.Fatalf("Select(c) = %+v, %v", n, err)
	}
	if got := h.order(); got != "c b a" || h.store.Current().Proxy.Mode != pinned {
		t.Fatalf("pinned: order %q mode %v", got, h.store.Current().Proxy.Mode)
	}
	saved, _ := h.source.last()
	if saved.Clash.Mode != pinned || saved.Clash.Pinned != "c" || !saved.Clash.ModeFromRuntime {
		t.Fatalf("persisted %+v", saved.Clash)
	}

	if m, err := h.mgr.SetMode(ctx, direct); err != nil || m != direct {
		t.Fatalf("SetMode(direct) = %v, %v", m, err)
	}
	ns, _ := h.store.Current().Namespace("team-a")
	if sel := ns.Config.GetProxy(); sel.GetMode() != direct || len(sel.GetNodes()) != 0 || h.store.Current().Proxy.Selected != "" {
		t.Fatalf("direct: %v", sel)
	}
	for _, n := range h.mgr.Status().Nodes {
		if n.Selected {
			t.Errorf("%s selected in direct mode", n.Name)
		}
	}
	// Back to pinned: the node chosen before is remembered.
	if _, err := h.mgr.SetMode(ctx, pinned); err != nil || h.order() != "c b a" {
		t.Fatalf("pinned again: %v, order %q", err, h.order())
	}
	// Auto starts from the pinned node and keeps it unless another is
	// clearly faster: b (50 ms) beats c (200 ms).
	if _, err := h.mgr.SetMode(ctx, auto); err != nil || h.order() != "b a c" {
		t.Fatalf("auto: %v, order %q", err, h.order())
	}
	// The pinned node leaves the subscription: pinned mode is refused.
	h.sub.set([]byte("socks5://127.0.0.1:1001#a\n"), nil)
	if _, err := h.mgr.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.mgr.SetMode(ctx, pinned); !errors.Is(err, ErrNoPinnedNode) || !strings.Contains(err.Error(), `"c"`) {
		t.Fatalf("pinned with a vanished node = %v", err)
	}
	h.noSecretsLogged(t)
}

func TestManagerFailureReports(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *Options) { o.ProbeInterval = time.Hour })
	h.run(t)
	eventually(t, "the first selection", func() bool { return h.order() == "b a c" })
	base := h.commits.n.Load()
	calls := func(name string) int {
		h.prober.mu.Lock()
		defer h.prober.mu.Unlock()
		return h.prober.calls[name]
	}
	status := func(name string) NodeStatus {
		for _, n := range h.mgr.Status().Nodes {
			if n.Name == name {
				return n
			}
		}
		t.Fatalf("no node %s", name)
		return NodeStatus{}
	}

	// A report about a node that is fine: re-probed, kept.
	before := calls("b")
	h.mgr.ReportProxyFailure("team-a", "edge-0", &selfhostv1.ProxyFailure{Node: "b", Prefix: "dockerhub", Error: "EOF after pw-b-Secret"})
	eventually(t, "b re-probed", func() bool { return calls("b") > before && !status("b").Suspect })
	if n := status("b"); !n.Alive || !strings.Contains(n.LastError, "edge team-a/edge-0") || strings.Contains(n.LastError, "pw-b-Secret") {
		t.Fatalf("b after a report: %+v", n)
	}
	if h.order() != "b a c" || h.commits.n.Load() != base {
		t.Fatal("a report about a live node changed the selection")
	}

	// A report about a node that died: re-probed, replaced, pushed once.
	h.prober.setFail("b", "connect: connection refused")
	h.mgr.ReportProxyFailure("team-a", "edge-0", &selfhostv1.ProxyFailure{Node: "b", Prefix: "dockerhub", Error: "dial: connection refused"})
	eventually(t, "b replaced", func() bool { return h.order() == "a c" })
	if n := status("b"); n.Alive || n.LastError != "connect: connection refused" {
		t.Fatalf("b after it died: %+v", n)
	}
	if n := h.commits.n.Load(); n != base+1 {
		t.Errorf("%d pushes", n-base)
	}

	// Unknown nodes and junk are ignored, and nothing blocks.
	for range 1000 {
		h.mgr.ReportProxyFailure("team-a", "edge-0", &selfhostv1.ProxyFailure{Node: "nope"})
		h.mgr.ReportProxyFailure("team-a", "edge-0", &selfhostv1.ProxyFailure{})
		h.mgr.ReportProxyFailure("team-a", "edge-0", nil)
	}
	h.noSecretsLogged(t)
}
