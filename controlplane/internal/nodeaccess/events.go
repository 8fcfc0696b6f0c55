package nodeaccess

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
)

// Event reasons on Node objects (kubectl describe node shows them).
const (
	// EventForwarderReady: the node's forwarder became ready, so the
	// injector's address works there.
	EventForwarderReady = "SelfhostForwarderReady"
	// EventNoForwarder: a schedulable node has no ready forwarder, so the
	// injector leaves images untouched.
	EventNoForwarder = "SelfhostNoForwarder"
)

// ReportEvents records an event on each Node whose node access changes,
// checking every interval until ctx ends; run it on the leader only, so
// replicas do not repeat each other. The first check is the baseline and
// reports nothing: at install time every node lacks a forwarder for a few
// seconds, which is no news (the admission warning and ListNodes say why
// while it lasts). With ModeNodePort it returns at once.
func (g *Gate) ReportEvents(ctx context.Context, rec record.EventRecorder, interval time.Duration) {
	if g.mode == ModeNodePort {
		return
	}
	var last map[string]bool
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if g.HasSynced() {
			last = g.report(rec, last)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// report records the changes since last (nil: the first check) and
// returns the new state: schedulable node → works.
func (g *Gate) report(rec record.EventRecorder, last map[string]bool) map[string]bool {
	nodes, err := g.Nodes()
	if err != nil {
		return last
	}
	now := map[string]bool{}
	for _, n := range nodes {
		if !n.Schedulable {
			continue
		}
		works := n.Works(g.mode)
		now[n.Name] = works
		was, seen := last[n.Name]
		ref := &corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: n.Name, UID: "", Namespace: metav1.NamespaceNone}
		switch {
		case last == nil:
		case !works && (!seen || was):
			rec.Eventf(ref, corev1.EventTypeWarning, EventNoForwarder,
				"nodeAccess %s: no ready selfhost-forwarder on this node; the injector leaves images untouched until there is", g.mode)
		case works && seen && !was:
			rec.Eventf(ref, corev1.EventTypeNormal, EventForwarderReady,
				"nodeAccess %s: selfhost-forwarder %s is ready; 127.0.0.1:<nodePort> reaches the edges on this node", g.mode, n.Forwarder)
		}
	}
	return now
}
