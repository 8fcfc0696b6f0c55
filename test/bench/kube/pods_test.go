//go:build bench

package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

const (
	optedNS = "bench-opted"
	plainNS = "bench-plain"
)

// benchPod has two containers and an init container.
func benchPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "bench"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
			Containers: []corev1.Container{
				{Name: "web", Image: "nginx:1.25"},
				{Name: "app", Image: "ghcr.io/org/app:v1"},
			},
		},
	}
}

// podImages are the init container's image, then the containers'.
func podImages(p *corev1.Pod) []string {
	var out []string
	for _, c := range p.Spec.InitContainers {
		out = append(out, c.Image)
	}
	for _, c := range p.Spec.Containers {
		out = append(out, c.Image)
	}
	return out
}

// rewritten is what the injector must make of benchPod's images.
func rewritten(edge string) []string {
	return []string{edge + "/dockerhub/library/busybox:latest", edge + "/dockerhub/library/nginx:1.25", edge + "/ghcr/org/app:v1"}
}

// checkRewritten says what is wrong with a pod from the opted-in
// namespace ("" when nothing).
func checkRewritten(p *corev1.Pod, edge string) string {
	if got, want := podImages(p), rewritten(edge); !slices.Equal(got, want) {
		return fmt.Sprintf("pod %s: images %q, want %q", p.Name, got, want)
	}
	if !slices.Contains(p.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: kubecontract.PullSecretName}) {
		return fmt.Sprintf("pod %s: imagePullSecrets %v lack %s", p.Name, p.Spec.ImagePullSecrets, kubecontract.PullSecretName)
	}
	var orig map[string]string
	if err := json.Unmarshal([]byte(p.Annotations[kubecontract.OriginalImagesAnnotation]), &orig); err != nil || orig["containers/web"] != "nginx:1.25" {
		return fmt.Sprintf("pod %s: annotation %s = %q", p.Name, kubecontract.OriginalImagesAnnotation, p.Annotations[kubecontract.OriginalImagesAnnotation])
	}
	return ""
}

// optedEdge is the opted-in namespace's edge address once the injector
// rewrites there, and a stored pod of the plain namespace (a realistic
// AdmissionReview object for the webhook rows).
type podSetup struct {
	edge     string
	plainPod *corev1.Pod
}

var pods podSetup

// prepareNamespaces creates the opted-in namespace (edge Service, a ready
// EndpointSlice) and the plain one, and waits until pods in the former are
// rewritten.
func prepareNamespaces(t *testing.T, c *cluster) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin := c.kube.Client
	for ns, optIn := range map[string]bool{optedNS: true, plainNS: false} {
		if err := createNamespace(ctx, admin, ns, optIn); err != nil {
			t.Fatal(err)
		}
	}
	np, err := edgeNodePort(ctx, admin, optedNS)
	if err != nil {
		t.Fatalf("the controller made no edge Service: %v", err)
	}
	if err := markEdgeReady(ctx, admin, optedNS); err != nil {
		t.Fatalf("EndpointSlice: %v", err)
	}
	edge := fmt.Sprintf("127.0.0.1:%d", np)
	// The apiserver and the cluster view pick things up asynchronously:
	// dry-run creates until the webhook rewrites.
	var last string
	for {
		got, err := admin.CoreV1().Pods(optedNS).Create(ctx, benchPod("probe"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil {
			if last = checkRewritten(got, edge); last == "" {
				return edge
			}
		} else {
			last = err.Error()
		}
		if ctx.Err() != nil {
			t.Fatalf("pods in %s are never rewritten: %s", optedNS, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// measurePods is row 1: pod creates through the apiserver, with the
// webhook (opted-in namespace) and without (plain namespace).
func measurePods(t *testing.T, c *cluster, s settings) []row {
	t.Helper()
	edge := prepareNamespaces(t, c)
	pods.edge = edge
	admin := c.kube.Client
	ctx := context.Background()
	nsOf := []string{optedNS, plainNS}
	prefix := []string{"w", "b"}

	var mu sync.Mutex
	created := [2][]*corev1.Pod{}
	create := func(arm int, name string) error {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		p, err := admin.CoreV1().Pods(nsOf[arm]).Create(rctx, benchPod(name), metav1.CreateOptions{})
		if err != nil {
			return err
		}
		mu.Lock()
		created[arm] = append(created[arm], p)
		mu.Unlock()
		return nil
	}
	// Warm-up (connections, caches): one second of each, not recorded.
	openLoop(2, s.podRate, time.Second, 500*time.Millisecond, func(arm, i int) error {
		return create(arm, fmt.Sprintf("warm-%s-%03d", prefix[arm], i))
	})
	res := openLoop(2, s.podRate, s.podFor, 2*time.Second, func(arm, i int) error {
		return create(arm, fmt.Sprintf("%s-%05d", prefix[arm], i))
	})

	// Functional checks: every opted-in pod rewritten, no plain pod touched.
	var bad []string
	for _, p := range created[0] {
		if msg := checkRewritten(p, edge); msg != "" {
			bad = append(bad, msg)
		}
	}
	orig := podImages(benchPod("x"))
	for _, p := range created[1] {
		if got := podImages(p); !slices.Equal(got, orig) || len(p.Spec.ImagePullSecrets) != 0 {
			bad = append(bad, fmt.Sprintf("plain pod %s changed: images %q", p.Name, got))
		}
		if pods.plainPod == nil {
			pods.plainPod = p
		}
	}
	for arm, r := range res {
		if r.errs > 0 {
			t.Errorf("%d pod creates in %s failed, the first: %v", r.errs, nsOf[arm], r.firstErr)
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d of %d opted-in pods not rewritten as expected (or plain pods changed); the first: %s", len(bad), len(created[0]), bad[0])
	}
	verdict := fmt.Sprintf("all %d opted-in pods rewritten (e.g. nginx:1.25 → %s), all %d plain pods untouched", len(created[0]), rewritten(edge)[1], len(created[1]))
	if len(bad) > 0 {
		verdict = fmt.Sprintf("**FAILED: %d pods not as expected**", len(bad))
	}
	r := latRow(row{
		name: fmt.Sprintf("pod create through the apiserver, %d pods/s open loop for %v per arm (2 containers + 1 init)", s.podRate, s.podFor),
	}, res[0].lat, res[1].lat)
	r.this = "opted-in namespace, webhook rewrites: " + r.this
	r.base = "unlabelled namespace, webhook not called: " + r.base
	p50 := ratio(percentile(res[0].lat, 50), percentile(res[1].lat, 50))
	p99 := ratio(percentile(res[0].lat, 99), percentile(res[1].lat, 99))
	r.target = fmt.Sprintf("≤ 1.3×: p50 %s, p99 %s", met(p50 <= 1.3), met(p99 <= 1.3))
	r.notes = verdict
	if e := res[0].errs + res[1].errs; e > 0 {
		r.notes += fmt.Sprintf("; %d creates failed", e)
	}
	return []row{r}
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

// stripForReview turns a stored pod into the object an apiserver sends a
// webhook on CREATE: no uid, resourceVersion or status.
func stripForReview(p *corev1.Pod, name string) *corev1.Pod {
	q := p.DeepCopy()
	q.Name, q.Namespace = name, ""
	q.UID, q.ResourceVersion, q.CreationTimestamp, q.ManagedFields = "", "", metav1.Time{}, nil
	q.Status = corev1.PodStatus{}
	q.Generation = 0
	return q
}

func errorsLine(errs int, first error) string {
	if errs == 0 {
		return ""
	}
	return fmt.Sprintf("; %d failed (%s)", errs, strings.TrimSpace(first.Error()))
}
