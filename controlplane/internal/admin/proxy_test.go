package admin

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/clash"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// fakeProxies answers every call with err, or a fixed pool.
type fakeProxies struct{ err error }

func (f fakeProxies) Status() clash.Status {
	return clash.Status{
		Mode:    selfhostv1.ProxyMode_PROXY_MODE_AUTO,
		Fetched: time.Unix(1700000000, 0),
		Nodes: []clash.NodeStatus{{Name: "hk", Type: "ss", Server: "1.2.3.4:8388", Selected: true,
			Health: clash.Health{Alive: true, Latency: 12 * time.Millisecond, History: []time.Duration{0, 12 * time.Millisecond}, LastChecked: time.Unix(1700000001, 0)}}},
		Skipped: []clash.Skipped{{Name: "bad", Reason: "missing port"}},
	}
}
func (f fakeProxies) Select(context.Context, string) (clash.NodeStatus, error) {
	return clash.NodeStatus{Name: "hk", Selected: true}, f.err
}
func (f fakeProxies) SetMode(_ context.Context, m selfhostv1.ProxyMode) (selfhostv1.ProxyMode, error) {
	return m, f.err
}
func (f fakeProxies) Refresh(context.Context) (clash.RefreshResult, error) {
	return clash.RefreshResult{Nodes: 1}, f.err
}

func proxyService(t *testing.T, p Proxies) *Service {
	t.Helper()
	svc, _ := newService(t, nil)
	if p != nil {
		svc.proxies = p
	}
	return svc
}

func TestProxyErrorsBecomeCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("select proxy node: %w: \"x\"", clash.ErrUnknownNode), codes.NotFound},
		{fmt.Errorf("set proxy mode: %w: select one", clash.ErrNoPinnedNode), codes.FailedPrecondition},
		{fmt.Errorf("%w: the subscription server answered 502", clash.ErrSubscription), codes.Unavailable},
		{fmt.Errorf("save: %w", context.Canceled), codes.Canceled},
	}
	for _, tc := range tests {
		svc := proxyService(t, fakeProxies{err: tc.err})
		ctx := t.Context()
		calls := map[string]error{}
		_, calls["Select"] = svc.SelectProxyNode(ctx, &selfhostv1.SelectProxyNodeRequest{Name: "x"})
		_, calls["SetMode"] = svc.SetProxyMode(ctx, &selfhostv1.SetProxyModeRequest{Mode: selfhostv1.ProxyMode_PROXY_MODE_PINNED})
		_, calls["Refresh"] = svc.RefreshSubscription(ctx, &selfhostv1.RefreshSubscriptionRequest{})
		for name, err := range calls {
			if status.Code(err) != tc.code {
				t.Errorf("%s with %v: %v, want %v", name, tc.err, err, tc.code)
			}
		}
	}
}

func TestProxyCallsWhenDisabled(t *testing.T) {
	t.Parallel()
	svc := proxyService(t, nil)
	ctx := t.Context()
	errs := []error{}
	_, err := svc.ListProxyNodes(ctx, &selfhostv1.ListProxyNodesRequest{})
	errs = append(errs, err)
	_, err = svc.SelectProxyNode(ctx, &selfhostv1.SelectProxyNodeRequest{Name: "x"})
	errs = append(errs, err)
	_, err = svc.SetProxyMode(ctx, &selfhostv1.SetProxyModeRequest{Mode: selfhostv1.ProxyMode_PROXY_MODE_AUTO})
	errs = append(errs, err)
	_, err = svc.RefreshSubscription(ctx, &selfhostv1.RefreshSubscriptionRequest{})
	errs = append(errs, err)
	for i, err := range errs {
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "clash.enabled") {
			t.Errorf("call %d: %v", i, err)
		}
	}
}

func TestListProxyNodes(t *testing.T) {
	t.Parallel()
	resp, err := proxyService(t, fakeProxies{}).ListProxyNodes(t.Context(), &selfhostv1.ListProxyNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	n := resp.GetNodes()[0]
	if n.GetName() != "hk" || !n.GetSelected() || n.GetLatency().AsDuration() != 12*time.Millisecond || len(n.GetHistory()) != 2 ||
		n.GetLastChecked().AsTime().Unix() != 1700000001 || resp.GetSubscriptionFetched().AsTime().Unix() != 1700000000 ||
		resp.GetSkipped()[0].GetReason() != "missing port" || resp.GetMode() != selfhostv1.ProxyMode_PROXY_MODE_AUTO {
		t.Fatalf("response %v", resp)
	}
	if _, err := proxyService(t, fakeProxies{}).SetProxyMode(t.Context(), &selfhostv1.SetProxyModeRequest{Mode: 42}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("mode 42: %v", err)
	}
}

func TestGetNamespaceConfigStripsClashMaps(t *testing.T) {
	t.Parallel()
	st := &config.State{
		Upstreams:  configspec.DefaultUpstreams(),
		Namespaces: map[string]*config.Namespace{"team-a": {}},
		Clash:      config.Clash{Enabled: true},
		Proxy: &config.ProxyPool{Order: []string{"hk"}, Nodes: map[string]*selfhostv1.ProxyNode{
			"hk": {Name: "hk", Type: "ss", ClashJson: `{"password":"node-secret"}`}}},
	}
	set, err := snapshot.Builder{}.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	svc := New(&fakeConfig{set: set}, noEdges{}, proxyService(t, nil).log)
	resp, err := svc.GetNamespaceConfig(t.Context(), &selfhostv1.GetNamespaceConfigRequest{Namespace: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	if nodes := resp.GetConfig().GetProxy().GetNodes(); len(nodes) != 1 || nodes[0].GetName() != "hk" || strings.Contains(resp.String(), "node-secret") {
		t.Fatalf("response %v", resp)
	}
	if ns, _ := set.Namespace("team-a"); !strings.Contains(ns.Config.String(), "node-secret") {
		t.Fatal("stripping modified the shared snapshot")
	}
}
