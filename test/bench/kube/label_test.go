//go:build bench

package kube

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// measureLabel is row 3: label a namespace, time until its four edge
// objects exist; the baseline is the benchmark creating four objects of
// the same kinds and shape itself, one after another. Both are observed
// through the same watch.
func measureLabel(t *testing.T, c *cluster, s settings) row {
	t.Helper()
	admin := c.kube.Client
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w := startWatcher(t, admin, "", func(ns, _ string) bool {
		return strings.HasPrefix(ns, "lbl-") || strings.HasPrefix(ns, "lblbase-")
	})
	defer w.stop()
	for i := range s.labelNS {
		for _, ns := range []string{fmt.Sprintf("lbl-%02d", i), fmt.Sprintf("lblbase-%02d", i)} {
			if err := createNamespace(ctx, admin, ns, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	patch := fmt.Appendf(nil, `{"metadata":{"labels":{%q:%q}}}`, kubecontract.OptInLabel, kubecontract.OptInValue)
	var ctl, base []time.Duration
	for i := range s.labelNS {
		// Let the control plane's client-side rate limiter refill: each
		// namespace is labelled on its own, not as part of a burst.
		time.Sleep(2 * time.Second)
		ns := fmt.Sprintf("lbl-%02d", i)
		start := time.Now()
		if _, err := admin.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatalf("label %s: %v", ns, err)
		}
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		last, err := w.waitKeys(wctx, ns, edgeKeys)
		wcancel()
		if err != nil {
			c.alive(t)
			t.Fatalf("namespace %s labelled: %v", ns, err)
		}
		ctl = append(ctl, last.Sub(start))

		time.Sleep(time.Second)
		ns = fmt.Sprintf("lblbase-%02d", i)
		start = time.Now()
		if err := createEdgeLike(ctx, admin, ns); err != nil {
			t.Fatalf("baseline objects in %s: %v", ns, err)
		}
		wctx, wcancel = context.WithTimeout(ctx, time.Minute)
		last, err = w.waitKeys(wctx, ns, edgeKeys)
		wcancel()
		if err != nil {
			t.Fatalf("baseline objects in %s: %v", ns, err)
		}
		base = append(base, last.Sub(start))
	}
	t.Logf("label → objects: %v; baseline %v", ctl, base)
	r := latRow(row{name: fmt.Sprintf("label a namespace → its 4 edge objects exist (ServiceAccount, Deployment, Service with node port, pull Secret), %d namespaces one at a time", s.labelNS)}, ctl, base)
	r.this = "control plane (watch → reconcile): " + r.this
	r.base = "the benchmark creating the same 4 objects itself: " + r.base
	r.notes = "seen through the benchmark's own watch; 2 s pause before each label (the control plane's client-side rate limiter refills)"
	if len(ctl) <= 100 {
		r.notes += fmt.Sprintf("; with %d samples p99 is the maximum", len(ctl))
	}
	return r
}
