// Package edgesvc decides which Services the forwarder serves: only the
// edge Services the control plane creates (name selfhost-edge, its
// managed-by and component labels, type NodePort, a ClusterIP, a TCP node
// port), each as one relay.Route from 127.0.0.1:<nodePort> to
// <ClusterIP>:<port>. Nothing else is ever a route, so the forwarder can
// reach edges and nothing else.
package edgesvc

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/forwarder/internal/relay"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// LabelSelector selects the edge Services in a list or watch. RBAC
// cannot narrow a grant by label, so the forwarder may list every
// Service; it asks only for these and RouteOf checks each again.
func LabelSelector() string {
	return labels.SelectorFromSet(labels.Set{
		kubecontract.ManagedByLabel: kubecontract.ManagedByValue,
		kubecontract.ComponentLabel: kubecontract.EdgeComponent,
	}).String()
}

// FieldSelector narrows the watch to Services named selfhost-edge.
func FieldSelector() string {
	return fields.OneTermEqualSelector("metadata.name", kubecontract.EdgeName).String()
}

// MinNodePort is the lowest node port the forwarder listens on: below it
// a non-root process could not bind, and no apiserver allocates there
// with the default range 30000-32767.
const MinNodePort = 1024

// RouteOf is svc's route, or an error saying why svc is not an edge
// Service the forwarder serves.
func RouteOf(svc *corev1.Service) (relay.Route, error) {
	name := svc.Namespace + "/" + svc.Name
	switch {
	case svc.Name != kubecontract.EdgeName:
		return relay.Route{}, fmt.Errorf("service %s: not named %s", name, kubecontract.EdgeName)
	case svc.Labels[kubecontract.ManagedByLabel] != kubecontract.ManagedByValue || svc.Labels[kubecontract.ComponentLabel] != kubecontract.EdgeComponent:
		return relay.Route{}, fmt.Errorf("service %s: not labelled as an edge Service", name)
	case svc.Spec.Type != corev1.ServiceTypeNodePort:
		return relay.Route{}, fmt.Errorf("service %s: type %s, not NodePort", name, svc.Spec.Type)
	case len(svc.Spec.Ports) == 0:
		return relay.Route{}, fmt.Errorf("service %s: no port", name)
	}
	// The controller's edge Service has exactly one port; the first is
	// the one the injector's address names.
	p := svc.Spec.Ports[0]
	switch {
	case p.Protocol != "" && p.Protocol != corev1.ProtocolTCP:
		return relay.Route{}, fmt.Errorf("service %s: protocol %s, not TCP", name, p.Protocol)
	case p.NodePort < MinNodePort || p.NodePort > 65535:
		return relay.Route{}, fmt.Errorf("service %s: node port %d outside %d-65535", name, p.NodePort, MinNodePort)
	case p.Port <= 0 || p.Port > 65535:
		return relay.Route{}, fmt.Errorf("service %s: port %d", name, p.Port)
	}
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil || !ip.Is4() || ip.IsUnspecified() || ip.IsLoopback() {
		// The injector's address is IPv4 loopback; a headless Service
		// ("None") has nothing to forward to.
		return relay.Route{}, fmt.Errorf("service %s: cluster IP %q is not a usable IPv4 address", name, svc.Spec.ClusterIP)
	}
	return relay.Route{Name: name, Port: int(p.NodePort), Target: netip.AddrPortFrom(ip, uint16(p.Port))}, nil
}

// Routes are the routes of svcs, by name, and why each other Service is
// not one.
func Routes(svcs []*corev1.Service) ([]relay.Route, error) {
	var out []relay.Route
	var errs []error
	for _, s := range svcs {
		r, err := RouteOf(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b relay.Route) int { return strings.Compare(a.Name, b.Name) })
	return out, errors.Join(errs...)
}
