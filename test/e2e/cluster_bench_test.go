//go:build bench

package e2e

// The cluster benchmark (test/bench-cluster.sh): on the real node of
// TestCluster, with the chart installed from images built in the same run:
//
//  1. time from helm install to the first pod Running through its edge;
//  2. pod start of a large image (BENCH_CLUSTER_MIB, default 200 MiB, a
//     fresh image per repetition): pulled by kubelet directly from the
//     upstream, through team-a's edge cold, through team-b's edge warm
//     (shared S3), interleaved per repetition, the node's copy removed
//     between arms;
//  3. pod-create latency through the apiserver in a labelled namespace
//     (the webhook is called, served from the control plane's pods) vs an
//     unlabelled one, interleaved;
//  4. the images' compressed sizes.
//
// It is a report: nothing fails on time.

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func TestClusterBenchTable(t *testing.T) {
	reps, mib, creates := envInt("BENCH_CLUSTER_REPS", 3), envInt("BENCH_CLUSTER_MIB", 200), envInt("BENCH_CLUSTER_CREATES", 30)
	e := newClusterEnv(t)
	ctx := context.Background()
	client := e.c.Client
	load := harness.LoadAvg
	var rows []string
	row := func(format string, a ...any) { rows = append(rows, fmt.Sprintf(format, a...)) }

	// 1. helm install → first pod Running through its edge.
	e.upstream.Push(t, "lab/app", "v1", harness.BusyboxImage(t))
	start := time.Now()
	e.install(t)
	e.labelNamespace(t, "team-a")
	e.labelNamespace(t, "team-b")
	e.waitDeploymentReady(t, releaseNS, chartName)
	e.waitDeploymentReady(t, "team-a", kubecontract.EdgeName)
	e.appDeployment(t, "team-a", "first", e.upstream.Host+"/lab/app:v1", 1)
	e.runningPods(t, "team-a", "first", 1)
	row("| helm install → first pod Running through its edge | %s | — | — | — | %s |", time.Since(start).Round(10*time.Millisecond), load())
	e.waitDeploymentReady(t, "team-b", kubecontract.EdgeName)

	edgeAddr := func(ns string) string {
		svc, err := client.CoreV1().Services(ns).Get(ctx, kubecontract.EdgeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("127.0.0.1:%d", svc.Spec.Ports[0].NodePort)
	}
	upstreamPort := e.upstream.Host[strings.LastIndex(e.upstream.Host, ":")+1:]

	// 2. Large image pod start: direct, edge cold, other namespace warm.
	// Direct and cold pull images of their own (same size, fresh random
	// layers), so neither finds the other's content; warm pulls the cold
	// arm's image through the other namespace's edge after the node's copy
	// is gone, so it comes from the shared bucket.
	bigImage := func(repo string) (string, string) {
		layer, err := random.Layer(int64(mib)<<20, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		img, err := mutate.AppendLayers(harness.BusyboxImage(t), layer)
		if err != nil {
			t.Fatal(err)
		}
		d, err := layer.Digest()
		if err != nil {
			t.Fatal(err)
		}
		e.upstream.Push(t, repo, "v1", img)
		return repo, d.String()
	}
	var direct, cold, warm []time.Duration
	for i := range reps {
		directRepo, directLayer := bigImage(fmt.Sprintf("lab/direct%d", i))
		coldRepo, coldLayer := bigImage(fmt.Sprintf("lab/big%d", i))
		direct = append(direct, e.timePodStart(t, "default", "direct", "127.0.0.1:"+upstreamPort+"/"+directRepo+":v1", directLayer))
		before := e.upstream.BlobGETs(t, coldRepo)
		cold = append(cold, e.timePodStart(t, "team-a", "cold", edgeAddr("team-a")+"/lab/"+coldRepo+":v1", coldLayer))
		afterCold := e.upstream.BlobGETs(t, coldRepo)
		warm = append(warm, e.timePodStart(t, "team-b", "warm", edgeAddr("team-b")+"/lab/"+coldRepo+":v1", coldLayer))
		if afterCold == before {
			t.Errorf("repetition %d: the cold arm fetched no blob upstream", i)
		}
		if n := e.upstream.BlobGETs(t, coldRepo); n != afterCold {
			t.Errorf("repetition %d: the warm arm fetched %d blobs upstream, want 0", i, n-afterCold)
		}
	}
	med := func(d []time.Duration) time.Duration { return median(d) }
	row("| pod start, %d MiB image, direct from the upstream (baseline) | %s | %s | — | — | %s |", mib, med(direct), spread(direct), load())
	row("| pod start through the edge, cold | %s | %s | %.2f× | ≤ 1.15× | %s |", med(cold), spread(cold), ratio(med(cold), med(direct)), load())
	row("| pod start through another namespace's edge, warm (shared S3) | %s | %s | %.2f× | ≤ 0.8× | %s |", med(warm), spread(warm), ratio(med(warm), med(direct)), load())

	// 3. Pod-create latency with and without the webhook, interleaved.
	var with, without []time.Duration
	for i := range creates {
		for _, a := range []struct {
			ns  string
			out *[]time.Duration
		}{{"team-a", &with}, {"default", &without}} {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("create-%d", i)},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "app", Image: e.upstream.Host + "/lab/app:v1"}},
					// Never scheduled: only the API call is measured.
					NodeSelector: map[string]string{"bench": "nowhere"},
				},
			}
			t0 := time.Now()
			got, err := client.CoreV1().Pods(a.ns).Create(ctx, pod, metav1.CreateOptions{})
			*a.out = append(*a.out, time.Since(t0))
			if err != nil {
				t.Fatal(err)
			}
			if rewritten := strings.HasPrefix(got.Spec.Containers[0].Image, "127.0.0.1:"); rewritten != (a.ns == "team-a") {
				t.Fatalf("pod %s/%s image %s: rewritten=%v", a.ns, got.Name, got.Spec.Containers[0].Image, rewritten)
			}
		}
	}
	row("| pod create, unlabelled namespace (baseline) | %s | %s | — | — | %s |", med(without), spread(without), load())
	row("| pod create, labelled namespace (webhook served from a pod) | %s | %s | %.2f× | ≤ 1.3× | %s |", med(with), spread(with), ratio(med(with), med(without)), load())

	// 4. Image sizes (compressed, linux/amd64, as built in this run).
	for _, im := range e.images.Images {
		for _, p := range im.Platforms {
			row("| image %s %s/%s compressed | %.1f MiB | — | — | — | — |", im.Target.Name, p.Platform.OS, p.Platform.Architecture, float64(p.Size)/(1<<20))
		}
	}

	table := "| row | median | spread (min–max) | ratio | target | load (1/5/15) |\n|---|---|---|---|---|---|\n" + strings.Join(rows, "\n") + "\n"
	table += fmt.Sprintf("\n%d repetitions of the pull rows (interleaved per repetition), %d pod creates per arm (interleaved)\n", reps, creates)
	table += strings.Join(harness.MachineInfo("cluster benchmark", "."), "\n") + "\n"
	t.Log("\n" + table)
	if out := os.Getenv("BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// timePodStart creates a pod running image in ns and returns the time
// from the create call to the pod Running; then it deletes the pod and
// removes the image and its big layer from the node, so that the next arm
// pulls again.
func (e *clusterEnv) timePodStart(t *testing.T, ns, name, image, layer string) time.Duration {
	t.Helper()
	t0 := time.Now()
	e.edgePod(t, ns, name, image)
	e.runningPods(t, ns, name, 1)
	d := time.Since(t0)
	e.removeFromNode(t, ns, name, image, layer)
	return d
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2].Round(time.Millisecond)
}

func spread(d []time.Duration) string {
	return fmt.Sprintf("%s–%s", slices.Min(d).Round(time.Millisecond), slices.Max(d).Round(time.Millisecond))
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }
