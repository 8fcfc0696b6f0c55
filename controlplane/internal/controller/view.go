package controller

import (
	"fmt"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// Edge is what the rest of the control plane needs to know about one
// opted-in namespace's edge.
type Edge struct {
	Namespace string
	// Address is the registry host pods pull through:
	// 127.0.0.1:<nodePort> of the edge's Service.
	Address string
	// RegistryCredentials are the namespace's own upstream credentials
	// by registry host, from its Secret
	// kubecontract.UpstreamCredentialsSecretName; nil when it has none or
	// a malformed one.
	RegistryCredentials map[string]config.Credentials
	// PullToken is the password of the namespace's pull Secret, which
	// the edge must demand (docs/security.md). Never log it.
	PullToken string
}

// HasSynced reports whether the informers the controller reads from have
// synced (Edge and Edges answer from them).
func (c *Controller) HasSynced() bool {
	for _, synced := range c.synced {
		if !synced() {
			return false
		}
	}
	return true
}

// Edge returns namespace ns's edge from the informers' caches; ok is false
// when ns is not opted in or its Service and pull Secret are not (yet) in
// place and in agreement. It answers on every replica, leader or not.
func (c *Controller) Edge(ns string) (Edge, bool) {
	n, err := c.namespaces.Get(ns)
	if err != nil || !c.optedIn(n) {
		return Edge{}, false
	}
	svc, err := c.services.Services(ns).Get(kubecontract.EdgeName)
	if err != nil || serviceDrift(svc, c.tmpl.desiredService(ns, 0)) != "" {
		return Edge{}, false
	}
	sec, err := c.secrets.Secrets(ns).Get(kubecontract.PullSecretName)
	if err != nil {
		return Edge{}, false
	}
	host, token, err := ParsePullSecret(sec)
	if err != nil || host != EdgeHost(nodePortOf(svc)) {
		return Edge{}, false
	}
	if c.isMirror(ns) && !c.mirrorAuth {
		// The operator declared the mirror's network trusted: no token.
		token = ""
	}
	return Edge{Namespace: ns, Address: host, PullToken: token, RegistryCredentials: c.ownCredentials(ns)}, true
}

// Edges returns the edges of every opted-in namespace that has one in
// place (see Edge), sorted by namespace.
func (c *Controller) Edges() ([]Edge, error) {
	sel := labels.SelectorFromSet(labels.Set{kubecontract.OptInLabel: kubecontract.OptInValue})
	nss, err := c.namespaces.List(sel)
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("list opted-in namespaces: %w", err)
	}
	out := make([]Edge, 0, len(nss)+1)
	for _, n := range nss {
		if e, ok := c.Edge(n.Name); ok && !c.isMirror(n.Name) {
			out = append(out, e)
		}
	}
	if c.mirrorNS != "" {
		if e, ok := c.Edge(c.mirrorNS); ok {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Namespace < out[j].Namespace })
	return out, nil
}
