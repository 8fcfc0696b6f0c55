package controller

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestKubeController runs the controller against a real kube-apiserver,
// as a ServiceAccount holding exactly PolicyRules: the apiserver's
// validation, defaulting, node port allocator and RBAC are real. The
// subtests share the controller and run in order.
func TestKubeController(t *testing.T) {
	t.Parallel()
	k := harness.StartKube(t)
	admin := k.Client
	kc := startKubeController(t, k, controlPlaneClient(t, k, "controlplane"), WithWorkers(2))
	kc.run()
	c := kc.c

	createNamespace(t, admin, optedIn("team-a"))
	t.Run("label creates the edge", func(t *testing.T) {
		waitFor(t, "team-a's edge", func() bool { return edgeReady(t, admin, "team-a") })
		waitFor(t, "Edge(team-a)", func() bool { _, ok := c.Edge("team-a"); return ok })
		o := objectsOf(t, admin, "team-a")
		host, token := o.pull(t)
		if edge, _ := c.Edge("team-a"); edge.Address != host || edge.PullToken != token {
			t.Fatalf("Edge = %s, want %s", edge.Address, host)
		}
		if np := o.svc.Spec.Ports[0].NodePort; np < 30000 || np > 32767 {
			t.Fatalf("node port %d", np)
		}
	})

	t.Run("desired objects are a fixed point of apiserver defaulting", func(t *testing.T) {
		before := objectsOf(t, admin, "team-a")
		waitFor(t, "the caches to hold the stored objects", func() bool { return cachesMatch(c, before) })
		if err := c.sync(t.Context(), "team-a"); err != nil {
			t.Fatal(err)
		}
		after := objectsOf(t, admin, "team-a")
		for _, p := range [][2]metav1.Object{{before.sa, after.sa}, {before.secret, after.secret}, {before.svc, after.svc}, {before.dep, after.dep}, {before.pdb, after.pdb}} {
			if p[0].GetResourceVersion() != p[1].GetResourceVersion() {
				t.Errorf("%T %s was rewritten by a sync of a converged namespace", p[1], p[1].GetName())
			}
		}
	})

	t.Run("deleted Service comes back on the same node port", func(t *testing.T) {
		old := objectsOf(t, admin, "team-a")
		host, token := old.pull(t)
		if err := admin.CoreV1().Services("team-a").Delete(t.Context(), kubecontract.EdgeName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a new Service", func() bool {
			o := objectsOf(t, admin, "team-a")
			return o.svc != nil && o.svc.UID != old.svc.UID
		})
		o := objectsOf(t, admin, "team-a")
		if got := o.svc.Spec.Ports[0].NodePort; got != old.svc.Spec.Ports[0].NodePort {
			t.Fatalf("node port %d, want %d", got, old.svc.Spec.Ports[0].NodePort)
		}
		if h, tok := o.pull(t); h != host || tok != token {
			t.Fatalf("pull secret changed: host %s (was %s), token kept %v", h, host, tok == token)
		}
	})

	t.Run("edited Deployment and garbage Secret are repaired", func(t *testing.T) {
		_, token := objectsOf(t, admin, "team-a").pull(t)
		deps := admin.AppsV1().Deployments("team-a")
		d, err := deps.Get(t.Context(), kubecontract.EdgeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d.Spec.Template.Spec.Containers[0].Image = "evil.example/edge:latest"
		d.Spec.Template.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem = ptr.To(false)
		if _, err := deps.Update(t.Context(), d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		secs := admin.CoreV1().Secrets("team-a")
		s, err := secs.Get(t.Context(), kubecontract.PullSecretName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Data[corev1.DockerConfigJsonKey] = []byte(`{"auths":"garbage"}`)
		if _, err := secs.Update(t.Context(), s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		want := c.tmpl.desiredDeployment("team-a", nodePortOf(objectsOf(t, admin, "team-a").svc))
		waitFor(t, "the repaired Deployment", func() bool {
			o := objectsOf(t, admin, "team-a")
			return o.dep != nil && deploymentDrift(o.dep, want) == ""
		})
		waitFor(t, "a regenerated pull Secret", func() bool { return edgeReady(t, admin, "team-a") })
		if _, got := objectsOf(t, admin, "team-a").pull(t); got == token {
			t.Fatal("a garbage Secret kept its old token")
		}
		waitFor(t, "the regeneration event", func() bool { return hasEvent(t, admin, "team-a", "PullSecretRegenerated") })
	})

	t.Run("taken node port moves the Service and the Secret follows", func(t *testing.T) {
		// While no leader runs, the Service goes and another takes its
		// port; the next leader finds the port taken.
		kc.stop()
		old := objectsOf(t, admin, "team-a")
		port := old.svc.Spec.Ports[0].NodePort
		if err := admin.CoreV1().Services("team-a").Delete(t.Context(), kubecontract.EdgeName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		createNamespace(t, admin, namespace("thieves", nil))
		thief := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "thieves", Name: "thief"}, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"a": "b"},
			Ports: []corev1.ServicePort{{Port: 80, NodePort: port}},
		}}
		if _, err := admin.CoreV1().Services("thieves").Create(t.Context(), thief, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		kc.run()
		waitFor(t, "a Service on another port with the Secret following", func() bool {
			o := objectsOf(t, admin, "team-a")
			return o.svc != nil && o.svc.Spec.Ports[0].NodePort != port && edgeReady(t, admin, "team-a")
		})
		waitFor(t, "the NodePortChanged event", func() bool { return hasEvent(t, admin, "team-a", "NodePortChanged") })
		if kc.logs.Count("edge node port changed") == 0 {
			t.Error("no log line for the changed node port")
		}
	})

	t.Run("unlabel removes the edge", func(t *testing.T) {
		editNamespace(t, admin, "team-a", func(ns *corev1.Namespace) { delete(ns.Labels, kubecontract.OptInLabel) })
		waitFor(t, "team-a's edge to go", func() bool { return objectsOf(t, admin, "team-a").count() == 0 })
		waitFor(t, "Edge(team-a) to go", func() bool { _, ok := c.Edge("team-a"); return !ok })
	})

	t.Run("wrong label value", func(t *testing.T) {
		createNamespace(t, admin, namespace("team-true", map[string]string{kubecontract.OptInLabel: "true"}))
		waitFor(t, "the wrong value logged", func() bool { return kc.logs.Count(`namespace=team-true`) > 0 })
		waitFor(t, "the controller idle", func() bool { return c.idle("team-true") })
		if n := objectsOf(t, admin, "team-true").count(); n != 0 {
			t.Fatalf("%d objects for a wrong label value", n)
		}
	})

	t.Run("namespace deleted mid-reconcile", func(t *testing.T) {
		var names []string
		for i := range 12 {
			name := fmt.Sprintf("doomed-%d", i)
			names = append(names, name)
			createNamespace(t, admin, optedIn(name))
			if i%3 == 0 {
				continue // let some sync first
			}
			if err := admin.CoreV1().Namespaces().Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			if i%2 == 0 {
				// No kube-controller-manager here: finalize by hand, so
				// the namespace is really gone, not only terminating.
				finalize(t, admin, name)
			}
		}
		for i := 0; i < len(names); i += 3 {
			if err := admin.CoreV1().Namespaces().Delete(t.Context(), names[i], metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "the controller idle, no namespace retrying", func() bool { return c.idle(names...) })
		for i, name := range names {
			if i%3 != 0 && i%2 == 0 {
				continue // gone: Kubernetes' GC would remove what is left
			}
			waitFor(t, name+"'s objects removed while terminating", func() bool { return objectsOf(t, admin, name).count() == 0 })
		}
	})

	t.Run("many namespaces", func(t *testing.T) {
		const n = 40
		var names []string
		for i := range n {
			names = append(names, fmt.Sprintf("bulk-%02d", i))
			createNamespace(t, admin, optedIn(names[i]))
		}
		waitFor(t, "every bulk edge", func() bool {
			edges, err := c.Edges()
			if err != nil {
				t.Fatal(err)
			}
			bulk := 0
			ports := map[string]bool{}
			for _, e := range edges {
				if strings.HasPrefix(e.Namespace, "bulk-") {
					bulk++
				}
				ports[e.Address] = true
			}
			return bulk == n && len(ports) == len(edges)
		})
	})
}

// cachesMatch reports whether the controller's caches hold exactly the
// stored versions of o's objects.
func cachesMatch(c *Controller, o edgeObjects) bool {
	if o.count() != 5 {
		return false
	}
	ns := o.sa.Namespace
	sa, err1 := c.serviceAccounts.ServiceAccounts(ns).Get(o.sa.Name)
	sec, err2 := c.secrets.Secrets(ns).Get(o.secret.Name)
	svc, err3 := c.services.Services(ns).Get(o.svc.Name)
	dep, err4 := c.deployments.Deployments(ns).Get(o.dep.Name)
	pdb, err5 := c.pdbs.PodDisruptionBudgets(ns).Get(o.pdb.Name)
	return err1 == nil && err2 == nil && err3 == nil && err4 == nil && err5 == nil &&
		sa.ResourceVersion == o.sa.ResourceVersion && sec.ResourceVersion == o.secret.ResourceVersion &&
		svc.ResourceVersion == o.svc.ResourceVersion && dep.ResourceVersion == o.dep.ResourceVersion &&
		pdb.ResourceVersion == o.pdb.ResourceVersion
}

func hasEvent(t *testing.T, client kubernetes.Interface, ns, reason string) bool {
	t.Helper()
	evs, err := client.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("reason", reason).String(),
	})
	return err == nil && len(evs.Items) > 0
}

// finalize removes the "kubernetes" finalizer of a terminating namespace,
// which kube-controller-manager would do once it emptied it.
func finalize(t *testing.T, client kubernetes.Interface, name string) {
	t.Helper()
	ns, err := client.CoreV1().Namespaces().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns.Spec.Finalizers = nil
	if _, err := client.CoreV1().Namespaces().Finalize(t.Context(), ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}
