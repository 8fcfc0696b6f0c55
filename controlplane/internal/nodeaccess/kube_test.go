package nodeaccess

import (
	"fmt"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

const releaseNS = "selfhost-system"

// TestKubeGate runs the gate on a real kube-apiserver as a ServiceAccount
// holding exactly PolicyRules: a new Ready node without a forwarder
// closes it; the forwarder's pod turning ready opens it (a Normal event
// on the node); a pod with the forwarder's labels in a tenant namespace
// counts for nothing; the forwarder's pod deleted closes it again (a
// Warning event); cordoning that node leaves no schedulable node.
func TestKubeGate(t *testing.T) {
	testkit.Integration(t)
	t.Parallel()
	k := harness.StartKube(t)
	ctx := t.Context()
	admin := k.Client
	client := gateClient(t, k)

	nodesF := informers.NewSharedInformerFactory(client, 0)
	podsF := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(releaseNS),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = ForwarderSelector().String() }))
	g, err := New(ModeAuto, releaseNS, nodesF.Core().V1().Nodes(), podsF.Core().V1().Pods())
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	nodesF.Start(stop)
	podsF.Start(stop)
	t.Cleanup(func() {
		close(stop)
		nodesF.Shutdown()
		podsF.Shutdown()
	})
	wait := func(what, want string) {
		t.Helper()
		testkit.WaitFor(t, what, time.Minute, func() error {
			why := g.NotReady()
			if (want == "") != (why == "") || !strings.Contains(why, want) {
				return fmt.Errorf("NotReady = %q, want %q", why, want)
			}
			return nil
		})
	}
	wait("no node yet", "no node is Ready and schedulable")
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	t.Cleanup(b.Shutdown)
	// The test takes each check itself (ReportEvents does it on a ticker),
	// so every state it sets up is seen by one check: on a loaded machine
	// a ticker can miss a state that lasts a few milliseconds.
	reporter := g.NewEventReporter(b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "k8s-selfhost-repo-controlplane"}))
	reporter.Check() // the baseline: no node yet
	// event waits until reason was recorded on node-1 at least n times
	// (the recorder folds repeats into one Event's count).
	event := func(reason string, n int32) {
		t.Helper()
		testkit.WaitFor(t, fmt.Sprintf("event %s on node-1 (%d)", reason, n), time.Minute, func() error {
			l, err := admin.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=node-1,reason=" + reason})
			if err != nil {
				return err
			}
			var got int32
			for _, e := range l.Items {
				got += max(e.Count, 1)
			}
			if got < n {
				return fmt.Errorf("%d so far", got)
			}
			return nil
		})
	}

	n, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	if n, err = admin.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("a Ready node without a forwarder", "on node node-1")
	reporter.Check()
	event(EventNoForwarder, 1)

	// A tenant cannot stand in for the forwarder.
	readyPod(t, admin, "team-a", "selfhost-forwarder-fake", "node-1")
	wait("a tenant's look-alike counts for nothing", "on node node-1")

	fw := readyPod(t, admin, releaseNS, "selfhost-forwarder-abcde", "node-1")
	wait("the forwarder ready", "")
	reporter.Check()
	event(EventForwarderReady, 1)
	nodes, err := g.Nodes()
	if err != nil || len(nodes) != 1 || nodes[0] != (Node{Name: "node-1", Schedulable: true, Forwarder: fw.Name, ForwarderReady: true}) {
		t.Fatalf("Nodes = %+v, %v", nodes, err)
	}

	if err := admin.CoreV1().Pods(releaseNS).Delete(ctx, fw.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	wait("the forwarder deleted", "on node node-1")
	reporter.Check()
	event(EventNoForwarder, 2)

	n.Spec.Unschedulable = true
	if _, err := admin.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("the only node cordoned", "no node is Ready and schedulable")
}

// readyPod creates a pod with the forwarder's labels bound to nodeName
// and marks it Running and Ready (there is no kubelet).
func readyPod(t *testing.T, admin kubernetes.Interface, ns, name, nodeName string) *corev1.Pod {
	t.Helper()
	ctx := t.Context()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// No kube-controller-manager makes the default ServiceAccount.
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: ForwarderLabels()},
		Spec:       corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "forwarder", Image: "forwarder:v1"}}},
	}
	p, err := admin.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if p, err = admin.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return p
}

// gateClient is a ServiceAccount's client bound to exactly PolicyRules:
// the cluster rules by a ClusterRole, the pod rules by a Role in the
// release namespace.
func gateClient(t *testing.T, k *harness.Kube) kubernetes.Interface {
	t.Helper()
	ctx := t.Context()
	const name = "controlplane"
	token := k.ServiceAccountToken(t, releaseNS, name, nil, 0)
	cluster, ns := PolicyRules()
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: releaseNS, Name: name}}
	rbac := k.Client.RbacV1()
	if _, err := rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: cluster}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, Subjects: subjects,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.Roles(releaseNS).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: ns}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.RoleBindings(releaseNS).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, Subjects: subjects,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	user, groups := harness.ServiceAccountUser(releaseNS, name)
	k.WaitAllowed(t, user, groups, &authorizationv1.ResourceAttributes{Verb: "watch", Resource: "nodes"})
	k.WaitAllowed(t, user, groups, &authorizationv1.ResourceAttributes{Verb: "watch", Resource: "pods", Namespace: releaseNS})
	return k.ClientFor(t, token)
}
