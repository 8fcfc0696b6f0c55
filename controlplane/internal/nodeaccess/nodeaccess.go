// Package nodeaccess tells the injector whether the address it writes,
// 127.0.0.1:<nodePort>, works on every node a new pod may land on
// (docs/kubernetes.md, "Node access"). Admission happens before
// scheduling, so the pod's node is unknown: with nodeAccess forwarder or
// auto, every Ready, schedulable node must run a ready forwarder
// (DaemonSet selfhost-forwarder in the release namespace), whose
// readiness means that every edge Service's node port on that node is
// either held by the forwarder or answered by the Service proxy. With
// nodeAccess nodePort the Service proxy is trusted, as before.
//
// It also lists, per node, what it found, for the admin API.
package nodeaccess

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	coreinformers "k8s.io/client-go/informers/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Mode is the chart value nodeAccess (--node-access).
type Mode string

// The modes.
const (
	ModeNodePort  Mode = "nodePort"
	ModeForwarder Mode = "forwarder"
	ModeAuto      Mode = "auto"
)

// ParseMode parses a --node-access value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeNodePort, ModeForwarder, ModeAuto:
		return m, nil
	}
	return "", fmt.Errorf("node access %q: want nodePort, forwarder or auto", s)
}

// ForwarderLabels are labels of the forwarder's pods in the release
// namespace (the chart's selfhost.forwarderSelectorLabels, without the
// instance: there is one release per cluster).
func ForwarderLabels() labels.Set {
	return labels.Set{"app.kubernetes.io/name": "k8s-selfhost-repo", "app.kubernetes.io/component": "forwarder"}
}

// ForwarderSelector selects the forwarder's pods.
func ForwarderSelector() labels.Selector { return labels.SelectorFromSet(ForwarderLabels()) }

// PolicyRules are what the gate needs: read the nodes and record events
// on them (cluster-wide), and read the forwarder's pods (release
// namespace only: bind them with a Role there).
func PolicyRules() (cluster, releaseNamespace []rbacv1.PolicyRule) {
	return []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		},
		[]rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list", "watch"}}}
}

// Node is what the gate found on one node.
type Node struct {
	Name string
	// Schedulable: Ready and not cordoned — a new pod may land there.
	Schedulable bool
	// Forwarder is the forwarder pod on the node ("" none);
	// ForwarderReady its Ready condition.
	Forwarder      string
	ForwarderReady bool
}

// Works reports whether 127.0.0.1:<nodePort> works on n under mode.
func (n Node) Works(mode Mode) bool { return mode == ModeNodePort || n.ForwarderReady }

// Gate answers from informers; the caller starts them.
type Gate struct {
	mode   Mode
	nodes  corelisters.NodeLister
	pods   corelisters.PodNamespaceLister
	synced []cache.InformerSynced
}

// New is a Gate for mode. nodes and pods are informers the caller
// starts; pods may be restricted to the release namespace and
// ForwarderSelector. With ModeNodePort both may be nil: nothing is read.
func New(mode Mode, releaseNamespace string, nodes coreinformers.NodeInformer, pods coreinformers.PodInformer) (*Gate, error) {
	g := &Gate{mode: mode}
	if mode == ModeNodePort {
		return g, nil
	}
	if nodes == nil || pods == nil || releaseNamespace == "" {
		return nil, fmt.Errorf("nodeaccess: mode %s needs the node and pod informers and the release namespace", mode)
	}
	g.nodes, g.pods = nodes.Lister(), pods.Lister().Pods(releaseNamespace)
	g.synced = []cache.InformerSynced{nodes.Informer().HasSynced, pods.Informer().HasSynced}
	return g, nil
}

// Mode is the gate's mode.
func (g *Gate) Mode() Mode { return g.mode }

// HasSynced reports whether the informers have filled their caches.
func (g *Gate) HasSynced() bool {
	for _, s := range g.synced {
		if !s() {
			return false
		}
	}
	return true
}

// Nodes is every node, by name, with its forwarder (none with
// ModeNodePort).
func (g *Gate) Nodes() ([]Node, error) {
	if g.mode == ModeNodePort {
		return nil, nil
	}
	nodes, err := g.nodes.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	pods, err := g.pods.List(ForwarderSelector())
	if err != nil {
		return nil, fmt.Errorf("list forwarder pods: %w", err)
	}
	return Evaluate(nodes, pods), nil
}

// NotReady says why the address does not work on every schedulable node
// ("" when it does): the injector then leaves images untouched with this
// as its warning.
func (g *Gate) NotReady() string {
	if g.mode == ModeNodePort {
		return ""
	}
	if !g.HasSynced() {
		return "the control plane has not read the nodes and forwarders yet"
	}
	nodes, err := g.Nodes()
	if err != nil {
		return "cannot read the nodes and forwarders: " + err.Error()
	}
	return Why(g.mode, nodes)
}

// Why is NotReady for nodes under mode.
func Why(mode Mode, nodes []Node) string {
	var missing []string
	schedulable := false
	for _, n := range nodes {
		if !n.Schedulable {
			continue
		}
		schedulable = true
		if !n.Works(mode) {
			missing = append(missing, n.Name)
		}
	}
	switch {
	case mode == ModeNodePort:
		return ""
	case !schedulable:
		return "no node is Ready and schedulable"
	case len(missing) == 0:
		return ""
	}
	shown := missing
	if len(shown) > 5 {
		shown = append(missing[:5:5], fmt.Sprintf("and %d more", len(missing)-5))
	}
	return fmt.Sprintf("nodeAccess %s: no ready forwarder (selfhost-forwarder) on node %s, so 127.0.0.1:<nodePort> may not reach the edge there",
		mode, strings.Join(shown, ", "))
}

// Evaluate pairs nodes with the forwarder pods bound to them, by name. Of
// several pods on one node (a rollout) a ready one counts.
func Evaluate(nodes []*corev1.Node, pods []*corev1.Pod) []Node {
	byNode := map[string]*corev1.Pod{}
	for _, p := range pods {
		if p.Spec.NodeName == "" || p.DeletionTimestamp != nil {
			continue
		}
		if cur, ok := byNode[p.Spec.NodeName]; !ok || (!podReady(cur) && podReady(p)) {
			byNode[p.Spec.NodeName] = p
		}
	}
	out := make([]Node, 0, len(nodes))
	for _, n := range nodes {
		st := Node{Name: n.Name, Schedulable: nodeReady(n) && !n.Spec.Unschedulable}
		if p, ok := byNode[n.Name]; ok {
			st.Forwarder, st.ForwarderReady = p.Name, podReady(p)
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Late is a Gate set after it is made: the admin API is built before the
// in-cluster runtime that owns the Gate. Until Set, it has no mode.
type Late struct {
	gate atomic.Pointer[Gate]
}

// Set makes l answer from g.
func (l *Late) Set(g *Gate) { l.gate.Store(g) }

// Mode is the Gate's mode, "" before Set.
func (l *Late) Mode() Mode {
	if g := l.gate.Load(); g != nil {
		return g.Mode()
	}
	return ""
}

// Nodes is the Gate's Nodes (none before Set).
func (l *Late) Nodes() ([]Node, error) {
	if g := l.gate.Load(); g != nil {
		return g.Nodes()
	}
	return nil, nil
}

// NotReady is the Gate's NotReady.
func (l *Late) NotReady() string {
	if g := l.gate.Load(); g != nil {
		return g.NotReady()
	}
	return "the control plane has not started its cluster view yet"
}
