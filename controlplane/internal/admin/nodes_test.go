package admin

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/nodeaccess"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// TestListNodes: standalone (no node-access check) and before the
// in-cluster runtime set it, ListNodes is FailedPrecondition; then it
// shows the mode, each node with its forwarder, and why the injector does
// not rewrite. (nodeaccess's own tests run the check on a real apiserver.)
func TestListNodes(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	if _, err := New(nil, nil, log).ListNodes(t.Context(), &selfhostv1.ListNodesRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("standalone: %v", err)
	}
	late := &nodeaccess.Late{}
	svc := New(nil, nil, log, WithNodeAccess(late))
	if _, err := svc.ListNodes(t.Context(), &selfhostv1.ListNodesRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("before the runtime: %v", err)
	}

	ready := []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	client := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Conditions: ready}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}, Status: corev1.NodeStatus{Conditions: ready}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "selfhost-system", Name: "selfhost-forwarder-x", Labels: nodeaccess.ForwarderLabels()},
			Spec:   corev1.PodSpec{NodeName: "n1"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}},
	)
	f := informers.NewSharedInformerFactory(client, 0)
	g, err := nodeaccess.New(nodeaccess.ModeAuto, "selfhost-system", f.Core().V1().Nodes(), f.Core().V1().Pods())
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); f.Shutdown() })
	f.Start(stop)
	late.Set(g)
	testkit.WaitFor(t, "the informers synced", 30*time.Second, g.HasSynced)
	var got *selfhostv1.ListNodesResponse
	testkit.WaitFor(t, "both nodes listed", 30*time.Second, func() bool {
		got, err = svc.ListNodes(t.Context(), &selfhostv1.ListNodesRequest{})
		return err == nil && len(got.GetNodes()) == 2
	})
	want := &selfhostv1.ListNodesResponse{NodeAccess: "auto", Nodes: []*selfhostv1.NodeAccessStatus{
		{Name: "n1", Schedulable: true, ForwarderPod: "selfhost-forwarder-x", ForwarderReady: true},
		{Name: "n2", Schedulable: true},
	}}
	if !strings.Contains(got.GetNotReady(), "on node n2") {
		t.Errorf("not_ready %q, want node n2 named", got.GetNotReady())
	}
	got.NotReady = ""
	if !proto.Equal(got, want) {
		t.Fatalf("ListNodes = %v, want %v", got, want)
	}
}
