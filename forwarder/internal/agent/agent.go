// Package agent runs the forwarder on one node: it watches the edge
// Services (package edgesvc), keeps the relay's listeners equal to them,
// probes who answers each loopback node port on this node (the Service
// proxy, or the relay), and serves the result as the node's path and its
// readiness on a loopback HTTP endpoint for kubelet's probes.
//
// The relay listens whatever the probe finds: where kube-proxy forwards
// loopback NodePorts (iptables mode) its rule sees the connection first
// and the listener stays idle; where it does not (IPVS, nftables without
// its gate, many eBPF replacements) the listener carries the connection.
// So the same address works in both cases, and a Service proxy that stops
// forwarding is covered without a restart.
package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/forwarder/internal/edgesvc"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/forwarder/internal/relay"
)

// PolicyRules are the forwarder's whole Kubernetes API access: list and
// watch Services, cluster-wide (edges live in every opted-in namespace).
// RBAC cannot narrow a grant by label; the watch asks only for the edge
// Services and edgesvc.RouteOf checks each (deploy/rbac.yaml).
func PolicyRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"list", "watch"}}}
}

// Options configure an Agent.
type Options struct {
	// Client reads the edge Services.
	Client kubernetes.Interface
	// Relay carries the connections.
	Relay *relay.Relay
	// ProbeWait is how long a probe waits for its connection at the
	// relay's listener before asking the other end; default 2 s.
	ProbeWait time.Duration
	// Reprobe is how often every port is probed again; default 5 min.
	Reprobe time.Duration
	// Rebind is how often a port that could not be bound is tried again
	// (and probed once bound); default 1 s. A replaced forwarder pod
	// starts while the old one may still hold the ports.
	Rebind time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Agent is the forwarder on one node.
type Agent struct {
	o   Options
	log *slog.Logger

	mu     sync.Mutex
	synced bool
	probed map[int]probeResult // by node port
	path   relay.Path          // last logged node path
}

type probeResult struct {
	path relay.Path
	err  string
	// listening is whether the relay held the port when it was probed:
	// once that changes the result is stale.
	listening bool
}

// New is an Agent; Run starts it.
func New(o Options) (*Agent, error) {
	if o.Client == nil || o.Relay == nil {
		return nil, fmt.Errorf("agent: Client and Relay are required")
	}
	if o.ProbeWait <= 0 {
		o.ProbeWait = 2 * time.Second
	}
	if o.Reprobe <= 0 {
		o.Reprobe = 5 * time.Minute
	}
	if o.Rebind <= 0 {
		o.Rebind = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Agent{o: o, log: o.Logger, probed: map[int]probeResult{}}, nil
}

// Run watches the edge Services until ctx ends. The relay's listeners
// stay open; the caller closes the relay (draining connections).
func (a *Agent) Run(ctx context.Context) error {
	f := informers.NewSharedInformerFactoryWithOptions(a.o.Client, 0, informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
		lo.LabelSelector = edgesvc.LabelSelector()
		lo.FieldSelector = edgesvc.FieldSelector()
	}))
	svcs := f.Core().V1().Services()
	kick := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if _, err := svcs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: poke, UpdateFunc: func(_, n any) { poke(n) }, DeleteFunc: poke,
	}); err != nil {
		return fmt.Errorf("watch edge Services: %w", err)
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), svcs.Informer().HasSynced) {
		return fmt.Errorf("watch edge Services: %w", ctx.Err())
	}
	lister := svcs.Lister()
	reprobe := time.NewTicker(a.o.Reprobe)
	defer reprobe.Stop()
	rebind := time.NewTicker(a.o.Rebind)
	defer rebind.Stop()
	all := false
	for {
		list, err := lister.List(labels.Everything())
		if err != nil {
			return fmt.Errorf("list edge Services: %w", err)
		}
		a.sync(ctx, list, all, kick)
		all = false
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case <-reprobe.C:
			all = true
		case <-rebind.C:
			if !a.anyUnbound() {
				continue
			}
		}
	}
}

// anyUnbound reports whether a route's port is not held by the relay.
func (a *Agent) anyUnbound() bool {
	for _, p := range a.o.Relay.Status() {
		if !p.Listening {
			return true
		}
	}
	return false
}

// Status is what the agent knows about its node.
type Status struct {
	// Synced: the edge Services have been read once.
	Synced bool `json:"synced"`
	// Path is who carries this node's loopback node ports: "nodePort"
	// when the Service proxy answered every probed port, "forwarder"
	// when the relay did for any, "" while nothing was probed or a
	// probe failed.
	Path relay.Path `json:"path"`
	// Ready: synced, and every edge Service's port is either held by the
	// relay or answered by the Service proxy.
	Ready bool   `json:"ready"`
	Ports []Port `json:"ports"`
}

// Port is one edge Service on this node.
type Port struct {
	Service    string     `json:"service"`
	NodePort   int        `json:"nodePort"`
	Target     string     `json:"target"`
	Listening  bool       `json:"listening"`
	BindError  string     `json:"bindError,omitempty"`
	Path       relay.Path `json:"path,omitempty"`
	ProbeError string     `json:"probeError,omitempty"`
}

// Status is the node's current state.
func (a *Agent) Status() Status {
	ports := a.o.Relay.Status()
	a.mu.Lock()
	defer a.mu.Unlock()
	st := Status{Synced: a.synced, Ready: a.synced, Ports: []Port{}}
	forwarder, nodePort := false, len(ports) > 0
	for _, p := range ports {
		r := a.probed[p.Route.Port]
		st.Ports = append(st.Ports, Port{Service: p.Route.Name, NodePort: p.Route.Port, Target: p.Route.Target.String(),
			Listening: p.Listening, BindError: p.BindError, Path: r.path, ProbeError: r.err})
		forwarder = forwarder || r.path == relay.PathForwarder
		nodePort = nodePort && r.path == relay.PathNodePort
		if !p.Listening && r.path != relay.PathNodePort {
			st.Ready = false
		}
	}
	switch {
	case forwarder:
		st.Path = relay.PathForwarder
	case nodePort:
		st.Path = relay.PathNodePort
	}
	return st
}

// sync applies list to the relay, then probes the ports never probed
// (every port when all), stopping early when the Services change again.
func (a *Agent) sync(ctx context.Context, list []*corev1.Service, all bool, kick chan struct{}) {
	routes, why := edgesvc.Routes(list)
	if why != nil {
		a.log.Warn("Services matching the edge selectors that are not forwarded", "why", why)
	}
	a.o.Relay.Set(routes)
	listening := map[int]bool{}
	for _, p := range a.o.Relay.Status() {
		listening[p.Route.Port] = p.Listening
	}
	a.mu.Lock()
	a.synced = true
	keep := map[int]probeResult{}
	var todo []int
	for _, r := range routes {
		res, ok := a.probed[r.Port]
		if ok {
			keep[r.Port] = res
		}
		if !ok || all || res.err != "" || res.listening != listening[r.Port] {
			todo = append(todo, r.Port)
		}
	}
	a.probed = keep
	a.mu.Unlock()
	for _, port := range todo {
		if len(kick) > 0 || ctx.Err() != nil {
			break
		}
		pctx, cancel := context.WithTimeout(ctx, a.o.ProbeWait+10*time.Second)
		path, err := a.o.Relay.Probe(pctx, port, a.o.ProbeWait)
		cancel()
		res := probeResult{path: path, listening: listening[port]}
		if err != nil {
			res.err = err.Error()
			a.log.Warn("probe of the loopback node port", "port", port, "err", err)
		}
		a.mu.Lock()
		a.probed[port] = res
		a.mu.Unlock()
	}
	if st := a.Status(); st.Path != a.path {
		a.log.Info("node path", "path", st.Path, "was", a.path, "ports", len(st.Ports))
		a.path = st.Path
	}
}
