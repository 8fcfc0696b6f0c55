package controller

import corev1 "k8s.io/api/core/v1"

// WithMirror makes namespace (the release namespace) get an edge of its
// own without the opt-in label: the cluster-wide mirror for clients the
// webhook does not reach (Docker daemons, CI runners, containerd mirrors
// in hosts.toml) through its NodePort. It is a tenant like any other: its
// own pull token (unless auth is false: then it serves anyone who reaches
// the port), its own proofs of access, never another namespace's private
// content. docs/kubernetes.md, "A cluster-wide mirror".
func WithMirror(namespace string, auth bool) Option {
	return func(c *Controller) { c.mirrorNS, c.mirrorAuth = namespace, auth }
}

// optedIn reports whether ns gets an edge: opted in by its label, or the
// mirror's namespace.
func (c *Controller) optedIn(ns *corev1.Namespace) bool {
	if c.mirrorNS != "" && ns.Name == c.mirrorNS {
		return ns.DeletionTimestamp == nil
	}
	return OptedIn(ns)
}

// IsMirror reports whether ns is the mirror's namespace.
func (c *Controller) IsMirror(ns string) bool { return c.mirrorNS != "" && ns == c.mirrorNS }
