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
// replicas do not repeat each other. With ModeNodePort it returns at once.
func (g *Gate) ReportEvents(ctx context.Context, rec record.EventRecorder, interval time.Duration) {
	if g.mode == ModeNodePort {
		return
	}
	r := g.NewEventReporter(rec)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		r.Check()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// EventReporter turns changes of node access into events, one Check at a
// time. Its first check after the informers synced is the baseline and
// reports nothing: at install time every node lacks a forwarder for a few
// seconds, which is no news (the admission warning and ListNodes say why
// while it lasts).
type EventReporter struct {
	g    *Gate
	rec  record.EventRecorder
	last map[string]bool // schedulable node → works; nil before the baseline
}

// NewEventReporter is an EventReporter for g recording to rec.
func (g *Gate) NewEventReporter(rec record.EventRecorder) *EventReporter {
	return &EventReporter{g: g, rec: rec}
}

// Check compares the nodes now with the last check and records the
// changes: a schedulable node that does not work (new, or no longer) gets
// a Warning, one that works again a Normal event.
func (r *EventReporter) Check() {
	if r.g.mode == ModeNodePort || !r.g.HasSynced() {
		return
	}
	nodes, err := r.g.Nodes()
	if err != nil {
		return
	}
	now := map[string]bool{}
	for _, n := range nodes {
		if !n.Schedulable {
			continue
		}
		works := n.Works(r.g.mode)
		now[n.Name] = works
		was, seen := r.last[n.Name]
		ref := &corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: n.Name, UID: "", Namespace: metav1.NamespaceNone}
		switch {
		case r.last == nil:
		case !works && (!seen || was):
			r.rec.Eventf(ref, corev1.EventTypeWarning, EventNoForwarder,
				"nodeAccess %s: no ready selfhost-forwarder on this node; the injector leaves images untouched until there is", r.g.mode)
		case works && seen && !was:
			r.rec.Eventf(ref, corev1.EventTypeNormal, EventForwarderReady,
				"nodeAccess %s: selfhost-forwarder %s is ready; 127.0.0.1:<nodePort> reaches the edges on this node", r.g.mode, n.Forwarder)
		}
	}
	r.last = now
}
