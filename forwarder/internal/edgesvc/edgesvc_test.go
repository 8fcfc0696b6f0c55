package edgesvc

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/forwarder/internal/relay"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

func edgeService(ns string, mut func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: kubecontract.EdgeName, Labels: map[string]string{
			kubecontract.ManagedByLabel: kubecontract.ManagedByValue,
			kubecontract.ComponentLabel: kubecontract.EdgeComponent,
		}},
		Spec: corev1.ServiceSpec{
			Type:      corev1.ServiceTypeNodePort,
			ClusterIP: "10.96.0.10",
			Ports:     []corev1.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 5000, NodePort: 30500}},
		},
	}
	if mut != nil {
		mut(s)
	}
	return s
}

func TestRouteOf(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		mut     func(*corev1.Service)
		wantErr string
	}{
		{"edge Service", nil, ""},
		{"other name", func(s *corev1.Service) { s.Name = "evil" }, "not named selfhost-edge"},
		{"no managed-by", func(s *corev1.Service) { delete(s.Labels, kubecontract.ManagedByLabel) }, "not labelled"},
		{"other component", func(s *corev1.Service) { s.Labels[kubecontract.ComponentLabel] = kubecontract.WebhookComponent }, "not labelled"},
		{"ClusterIP type", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP }, "not NodePort"},
		{"no ports", func(s *corev1.Service) { s.Spec.Ports = nil }, "no port"},
		{"UDP", func(s *corev1.Service) { s.Spec.Ports[0].Protocol = corev1.ProtocolUDP }, "not TCP"},
		{"privileged node port", func(s *corev1.Service) { s.Spec.Ports[0].NodePort = 22 }, "outside"},
		{"node port not allocated", func(s *corev1.Service) { s.Spec.Ports[0].NodePort = 0 }, "outside"},
		{"headless", func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone }, "not a usable"},
		{"IPv6", func(s *corev1.Service) { s.Spec.ClusterIP = "fd00::10" }, "not a usable"},
		{"loopback", func(s *corev1.Service) { s.Spec.ClusterIP = "127.0.0.1" }, "not a usable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RouteOf(edgeService("team-a", tc.mut))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("RouteOf = %+v, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			want := relay.Route{Name: "team-a/selfhost-edge", Port: 30500, Target: netip.MustParseAddrPort("10.96.0.10:5000")}
			if err != nil || got != want {
				t.Fatalf("RouteOf = %+v, %v; want %+v", got, err, want)
			}
		})
	}
}

func TestRoutesAndSelectors(t *testing.T) {
	t.Parallel()
	b := edgeService("team-b", func(s *corev1.Service) { s.Spec.Ports[0].NodePort = 30501 })
	got, err := Routes([]*corev1.Service{b, edgeService("team-a", nil), edgeService("team-c", func(s *corev1.Service) { s.Name = "x" })})
	if len(got) != 2 || got[0].Name != "team-a/selfhost-edge" || got[1].Port != 30501 {
		t.Fatalf("Routes = %+v", got)
	}
	if err == nil || !strings.Contains(err.Error(), "team-c/x") {
		t.Fatalf("Routes error = %v", err)
	}
	sel, err := labels.Parse(LabelSelector())
	if err != nil || !sel.Matches(labels.Set(edgeService("a", nil).Labels)) || sel.Matches(labels.Set{kubecontract.ComponentLabel: kubecontract.EdgeComponent}) {
		t.Fatalf("LabelSelector %q: %v", LabelSelector(), err)
	}
	if FieldSelector() != "metadata.name="+kubecontract.EdgeName {
		t.Fatalf("FieldSelector = %q", FieldSelector())
	}
}
