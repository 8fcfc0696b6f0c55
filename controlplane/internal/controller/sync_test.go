package controller

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

func TestSyncCreatesEdge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTemplate(), optedIn("team-a"), namespace("team-b", nil))
	e.mustSync("team-a")
	e.mustSync("team-b")

	o := e.objects("team-a")
	if o.count() != 5 {
		t.Fatalf("%d of 5 objects", o.count())
	}
	for _, m := range []metav1.Object{o.sa, o.secret, o.svc, o.dep, o.pdb} {
		for k, v := range ManagedLabels() {
			if m.GetLabels()[k] != v {
				t.Errorf("%s: label %s=%q, want %q", m.GetName(), k, m.GetLabels()[k], v)
			}
		}
	}
	if o.sa.AutomountServiceAccountToken == nil || *o.sa.AutomountServiceAccountToken {
		t.Error("service account automounts its token")
	}
	if o.secret.Type != corev1.SecretTypeDockerConfigJson {
		t.Errorf("secret type %s", o.secret.Type)
	}
	host, token := o.pull(t)
	if got, ok := e.c.Edge("team-a"); !ok || got.Address != host || got.PullToken != token {
		t.Errorf("Edge(team-a) = %+v, %v; want %s", got.Address, ok, host)
	}
	if strings.Contains(e.logs.String(), token) {
		t.Error("the log contains the pull token")
	}
	if n := e.objects("team-b").count(); n != 0 {
		t.Errorf("team-b (not opted in) has %d objects", n)
	}
}

func TestSyncIsIdempotent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTemplate(), optedIn("team-a"))
	e.mustSync("team-a")
	_, token := e.objects("team-a").pull(t)
	e.client.ClearActions()
	for range 3 {
		e.mustSync("team-a")
	}
	if w := e.writes(); len(w) != 0 {
		t.Fatalf("converged namespace: writes %v", w)
	}
	if _, again := e.objects("team-a").pull(t); again != token {
		t.Fatal("the pull token changed across reconciles")
	}
}

func TestSyncRepairsDrift(t *testing.T) {
	t.Parallel()
	type ctx = context.Context
	tests := []struct {
		name      string
		drift     func(ctx, *env) error
		check     func(*testing.T, edgeObjects)
		sameToken bool
	}{
		{"deployment image", func(c ctx, e *env) error {
			return updateDeployment(c, e, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "evil:latest" })
		}, func(t *testing.T, o edgeObjects) {
			if img := o.dep.Spec.Template.Spec.Containers[0].Image; img != testTemplate().Image {
				t.Errorf("image %s", img)
			}
		}, true},
		{"deployment capabilities and replicas", func(c ctx, e *env) error {
			return updateDeployment(c, e, func(d *appsv1.Deployment) {
				d.Spec.Replicas = ptr.To[int32](0)
				d.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities = nil
			})
		}, func(t *testing.T, o edgeObjects) {
			if *o.dep.Spec.Replicas != DefaultReplicas || o.dep.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities == nil {
				t.Errorf("replicas %d, security context %+v", *o.dep.Spec.Replicas, o.dep.Spec.Template.Spec.Containers[0].SecurityContext)
			}
		}, true},
		{"deployment sidecar and annotation kept", func(c ctx, e *env) error {
			return updateDeployment(c, e, func(d *appsv1.Deployment) {
				d.Spec.Template.Annotations = map[string]string{"kubectl.kubernetes.io/restartedAt": "now"}
				d.Spec.Template.Spec.Containers = append(d.Spec.Template.Spec.Containers, corev1.Container{Name: "sidecar", Image: "x"})
				d.Spec.Template.Spec.Containers[0].Args = nil
			})
		}, func(t *testing.T, o edgeObjects) {
			ps := o.dep.Spec.Template.Spec
			if len(ps.Containers) != 2 || len(ps.Containers[0].Args) == 0 || o.dep.Spec.Template.Annotations == nil {
				t.Errorf("containers %d, args %q, annotations %v", len(ps.Containers), ps.Containers[0].Args, o.dep.Spec.Template.Annotations)
			}
		}, true},
		{"deployment deleted", func(c ctx, e *env) error {
			return e.client.AppsV1().Deployments("team-a").Delete(c, kubecontract.EdgeName, metav1.DeleteOptions{})
		}, nil, true},
		{"deployment selector", func(c ctx, e *env) error {
			return updateDeployment(c, e, func(d *appsv1.Deployment) { d.Spec.Selector.MatchLabels = map[string]string{"x": "y"} })
		}, func(t *testing.T, o edgeObjects) {
			if o.dep.Spec.Selector.MatchLabels["x"] != "" {
				t.Errorf("selector %v", o.dep.Spec.Selector.MatchLabels)
			}
		}, true},
		{"deployment managed-by label removed (adopted)", func(c ctx, e *env) error {
			return updateDeployment(c, e, func(d *appsv1.Deployment) { delete(d.Labels, kubecontract.ManagedByLabel) })
		}, nil, true},
		{"service type", func(c ctx, e *env) error {
			return updateService(c, e, func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeClusterIP
				s.Spec.Ports[0].NodePort = 0
			})
		}, nil, true},
		{"service selector", func(c ctx, e *env) error {
			return updateService(c, e, func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "other"} })
		}, func(t *testing.T, o edgeObjects) {
			if o.svc.Spec.Selector["app"] != "" {
				t.Errorf("selector %v", o.svc.Spec.Selector)
			}
		}, true},
		{"service deleted", func(c ctx, e *env) error {
			return e.client.CoreV1().Services("team-a").Delete(c, kubecontract.EdgeName, metav1.DeleteOptions{})
		}, nil, true},
		{"secret deleted", func(c ctx, e *env) error {
			return e.client.CoreV1().Secrets("team-a").Delete(c, kubecontract.PullSecretName, metav1.DeleteOptions{})
		}, nil, false},
		{"secret garbage", func(c ctx, e *env) error {
			return updateSecret(c, e, func(s *corev1.Secret) { s.Data[corev1.DockerConfigJsonKey] = []byte("garbage") })
		}, nil, false},
		{"secret weak password", func(c ctx, e *env) error {
			return updateSecret(c, e, func(s *corev1.Secret) {
				s.Data[corev1.DockerConfigJsonKey] = []byte(`{"auths":{"127.0.0.1:30000":{"username":"selfhost","password":"x","auth":"c2VsZmhvc3Q6eA=="}}}`)
			})
		}, nil, false},
		{"secret opaque", func(c ctx, e *env) error {
			s, err := e.client.CoreV1().Secrets("team-a").Get(c, kubecontract.PullSecretName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if err := e.client.CoreV1().Secrets("team-a").Delete(c, s.Name, metav1.DeleteOptions{}); err != nil {
				return err
			}
			s.ResourceVersion, s.Type = "", corev1.SecretTypeOpaque
			_, err = e.client.CoreV1().Secrets("team-a").Create(c, s, metav1.CreateOptions{})
			return err
		}, nil, false},
		{"service account automount", func(c ctx, e *env) error {
			sa, err := e.client.CoreV1().ServiceAccounts("team-a").Get(c, kubecontract.EdgeName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			sa.AutomountServiceAccountToken = ptr.To(true)
			delete(sa.Labels, kubecontract.ComponentLabel)
			_, err = e.client.CoreV1().ServiceAccounts("team-a").Update(c, sa, metav1.UpdateOptions{})
			return err
		}, func(t *testing.T, o edgeObjects) {
			if *o.sa.AutomountServiceAccountToken {
				t.Error("automount not repaired")
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, testTemplate(), optedIn("team-a"))
			e.mustSync("team-a")
			want := e.c.tmpl.desiredDeployment("team-a", nodePortOf(e.objects("team-a").svc))
			host, token := e.objects("team-a").pull(t)
			if err := tt.drift(e.ctx, e); err != nil {
				t.Fatal(err)
			}
			e.mustSync("team-a")
			o := e.objects("team-a")
			if o.count() != 5 {
				t.Fatalf("%d of 5 objects after repair", o.count())
			}
			gotHost, gotToken := o.pull(t)
			if gotHost != host {
				t.Errorf("edge host %s, want %s (stable)", gotHost, host)
			}
			if (gotToken == token) != tt.sameToken {
				t.Errorf("token kept %v, want %v", gotToken == token, tt.sameToken)
			}
			if d := deploymentDrift(o.dep, want); d != "" {
				t.Errorf("deployment still drifts at %s", d)
			}
			for _, m := range []metav1.Object{o.sa, o.secret, o.svc, o.dep, o.pdb} {
				if d := labelsDrift(m.GetLabels(), ManagedLabels()); d != "" {
					t.Errorf("%s: %s", m.GetName(), d)
				}
			}
			if tt.check != nil {
				tt.check(t, o)
			}
			e.client.ClearActions()
			e.mustSync("team-a")
			if w := e.writes(); len(w) != 0 {
				t.Errorf("not converged after the repair: writes %v", w)
			}
		})
	}
}

func TestSyncGarbageSecretIsLogged(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTemplate(), optedIn("team-a"))
	e.mustSync("team-a")
	if err := updateSecret(e.ctx, e, func(s *corev1.Secret) { s.Data[corev1.DockerConfigJsonKey] = []byte(`{"auths":{}}`) }); err != nil {
		t.Fatal(err)
	}
	e.mustSync("team-a")
	if n := e.logs.Count("pull secret unreadable"); n != 1 || !strings.Contains(e.logs.String(), "data[.dockerconfigjson].auths has 0 entries") {
		t.Fatalf("%d regeneration lines naming the field; log:\n%s", n, e.logs)
	}
	e.mustSync("team-a")
	if n := e.logs.Count("pull secret unreadable"); n != 1 {
		t.Fatalf("regenerated again: %d lines", n)
	}
}

func TestSyncNodePortTaken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTemplate(), optedIn("team-a"), namespace("other", nil))
	e.c.nodePortGrace = 0
	e.mustSync("team-a")
	old := e.objects("team-a").svc.Spec.Ports[0].NodePort
	svcs := e.client.CoreV1().Services("team-a")
	if err := svcs.Delete(e.ctx, kubecontract.EdgeName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	thief := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "thief"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 80, NodePort: old}},
	}}
	if _, err := e.client.CoreV1().Services("other").Create(e.ctx, thief, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.mustSync("team-a")
	o := e.objects("team-a")
	host, _ := o.pull(t)
	if got := o.svc.Spec.Ports[0].NodePort; got == old || got == 0 {
		t.Fatalf("node port %d, want a new one (old %d taken)", got, old)
	}
	if e.logs.Count("edge node port changed") != 1 {
		t.Fatalf("no log line about the changed port:\n%s", e.logs)
	}
	e.refresh()
	if edge, ok := e.c.Edge("team-a"); !ok || edge.Address != host {
		t.Fatalf("Edge = %+v, %v; want %s", edge.Address, ok, host)
	}
}

// TestSyncNodePortBusyBriefly: a remembered port still allocated (a
// deleted Service's port is released after its watch event) is asked for
// again during the grace period, and kept once it is free.
func TestSyncNodePortBusyBriefly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTemplate(), optedIn("team-a"), namespace("other", nil))
	e.c.nodePortGrace = time.Hour
	e.mustSync("team-a")
	old := e.objects("team-a").svc.Spec.Ports[0].NodePort
	if err := e.client.CoreV1().Services("team-a").Delete(e.ctx, kubecontract.EdgeName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	holder := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "holder"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 80, NodePort: old}},
	}}
	if _, err := e.client.CoreV1().Services("other").Create(e.ctx, holder, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := e.sync("team-a"); !errors.Is(err, errNodePortBusy) {
			t.Fatalf("sync with the port still allocated: %v, want errNodePortBusy", err)
		}
	}
	if err := e.client.CoreV1().Services("other").Delete(e.ctx, "holder", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.mustSync("team-a")
	if got := e.objects("team-a").svc.Spec.Ports[0].NodePort; got != old {
		t.Fatalf("node port %d, want %d kept", got, old)
	}
	if n := e.logs.Count("allocating another"); n != 0 {
		t.Fatalf("%d lines about another port", n)
	}
}

func TestSyncRemovesEdge(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*corev1.Namespace)
		logged string
	}{
		{"label removed", func(ns *corev1.Namespace) { delete(ns.Labels, kubecontract.OptInLabel) }, ""},
		{"wrong value", func(ns *corev1.Namespace) { ns.Labels[kubecontract.OptInLabel] = "true" }, "wrong value"},
		{"terminating", func(ns *corev1.Namespace) {
			ns.DeletionTimestamp = ptr.To(metav1.Now())
			ns.Finalizers = []string{"kubernetes"}
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			foreign := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "team-b", Name: kubecontract.EdgeName}}
			webhook := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-b", Name: kubecontract.PullSecretName,
				Labels: map[string]string{kubecontract.ManagedByLabel: kubecontract.ManagedByValue, kubecontract.ComponentLabel: kubecontract.WebhookComponent}}}
			e := newEnv(t, testTemplate(), optedIn("team-a"), namespace("team-b", nil), foreign, webhook)
			e.mustSync("team-a")
			ns, err := e.client.CoreV1().Namespaces().Get(e.ctx, "team-a", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tt.change(ns)
			if _, err := e.client.CoreV1().Namespaces().Update(e.ctx, ns, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			e.mustSync("team-a")
			if n := e.objects("team-a").count(); n != 0 {
				t.Fatalf("%d objects left", n)
			}
			if _, ok := e.c.Edge("team-a"); ok {
				t.Error("Edge(team-a) still reported")
			}
			if tt.logged != "" && e.logs.Count(tt.logged) != 1 {
				t.Errorf("log has %d lines with %q", e.logs.Count(tt.logged), tt.logged)
			}
			e.mustSync("team-b")
			if _, err := e.client.CoreV1().Services("team-b").Get(e.ctx, kubecontract.EdgeName, metav1.GetOptions{}); err != nil {
				t.Errorf("a Service without the managed-by label was touched: %v", err)
			}
			if _, err := e.client.CoreV1().Secrets("team-b").Get(e.ctx, kubecontract.PullSecretName, metav1.GetOptions{}); err != nil {
				t.Errorf("a Secret of another component was touched: %v", err)
			}
		})
	}
}

func TestSyncWrongValueLoggedOnce(t *testing.T) {
	t.Parallel()
	ns := namespace("team-a", map[string]string{kubecontract.OptInLabel: "true"})
	e := newEnv(t, testTemplate(), ns)
	for range 3 {
		e.mustSync("team-a")
	}
	if n := e.logs.Count("wrong value"); n != 1 {
		t.Fatalf("%d log lines for the wrong value, want 1", n)
	}
	ns.Labels[kubecontract.OptInLabel] = "yes"
	if _, err := e.client.CoreV1().Namespaces().Update(e.ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.mustSync("team-a")
	e.mustSync("team-a")
	if n := e.logs.Count("wrong value"); n != 2 {
		t.Fatalf("%d log lines after a second wrong value, want 2", n)
	}
	if n := e.objects("team-a").count(); n != 0 {
		t.Fatalf("%d objects for a wrong value", n)
	}
}

func TestSyncNamespaceGone(t *testing.T) {
	t.Parallel()
	nsGone := func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "team-a")
	}
	terminating := func(k8stesting.Action) (bool, runtime.Object, error) {
		err := apierrors.NewForbidden(schema.GroupResource{Resource: "services"}, kubecontract.EdgeName,
			errDummy("unable to create new content in namespace team-a because it is being terminated"))
		err.ErrStatus.Details.Causes = []metav1.StatusCause{{Type: corev1.NamespaceTerminatingCause, Field: "team-a"}}
		return true, nil, err
	}
	tests := []struct {
		name    string
		reactor k8stesting.ReactionFunc
	}{
		{"deleted", nsGone},
		{"terminating", terminating},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, testTemplate(), optedIn("team-a"))
			e.client.PrependReactor("create", "*", tt.reactor)
			if err := e.sync("team-a"); err != nil {
				t.Fatalf("sync of a vanished namespace: %v", err)
			}
		})
	}
	t.Run("not in cache", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, testTemplate())
		if err := e.sync("team-a"); err != nil {
			t.Fatal(err)
		}
		if w := e.writes(); len(w) != 0 {
			t.Fatalf("writes %v", w)
		}
	})
}

func TestEdges(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTemplate(), optedIn("b"), optedIn("a"), optedIn("c"), namespace("d", nil))
	for _, ns := range []string{"a", "b", "d"} {
		e.mustSync(ns)
	}
	e.refresh()
	edges, err := e.c.Edges()
	if err != nil {
		t.Fatal(err)
	}
	if len(edges) != 2 || edges[0].Namespace != "a" || edges[1].Namespace != "b" {
		t.Fatalf("Edges = %+v, want a and b (c has no edge yet, d is not opted in)", edges)
	}
	for _, edge := range edges {
		o := e.objects(edge.Namespace)
		if host, token := o.pull(t); edge.Address != host || edge.PullToken != token {
			t.Errorf("%s: %s, want %s", edge.Namespace, edge.Address, host)
		}
	}
}

type errDummy string

func (e errDummy) Error() string { return string(e) }

// getUpdater is the part of a typed client (Deployments, Services,
// Secrets, …) that update uses.
type getUpdater[T any] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	Update(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
}

// update reads name through api, edits it and writes it back.
func update[T any](ctx context.Context, api getUpdater[T], name string, edit func(T)) error {
	obj, err := api.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	edit(obj)
	_, err = api.Update(ctx, obj, metav1.UpdateOptions{})
	return err
}

func updateDeployment(ctx context.Context, e *env, edit func(*appsv1.Deployment)) error {
	return update(ctx, e.client.AppsV1().Deployments("team-a"), kubecontract.EdgeName, edit)
}

func updateService(ctx context.Context, e *env, edit func(*corev1.Service)) error {
	return update(ctx, e.client.CoreV1().Services("team-a"), kubecontract.EdgeName, edit)
}

func updateSecret(ctx context.Context, e *env, edit func(*corev1.Secret)) error {
	return update(ctx, e.client.CoreV1().Secrets("team-a"), kubecontract.PullSecretName, edit)
}
