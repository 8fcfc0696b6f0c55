package leader

import (
	"errors"
	"net/http"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// kubeCluster is a real kube-apiserver; a crashed candidate's client
// fails every request.
type kubeCluster struct{ k *harness.Kube }

func (c kubeCluster) admin() kubernetes.Interface { return c.k.Client }

func (c kubeCluster) candidateClient(t *testing.T) (kubernetes.Interface, func(string)) {
	var dead atomic.Bool
	cfg := rest.CopyConfig(c.k.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if dead.Load() {
				return nil, errors.New("crashed")
			}
			return rt.RoundTrip(r)
		})
	})
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return client, func(string) { dead.Store(true) }
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestKubeElection runs the elections against a real kube-apiserver: a
// stopped leader hands over, a crashed one is replaced after its lease
// expires, and a leader whose Lease is given to another holder stops.
func TestKubeElection(t *testing.T) {
	t.Parallel()
	k := harness.StartKube(t)
	if _, err := k.Client.CoreV1().Namespaces().Create(t.Context(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cl := kubeCluster{k}
	t.Run("handover on stop", func(t *testing.T) { testHandover(t, cl, "stop", false) })
	t.Run("handover on crash", func(t *testing.T) { testHandover(t, cl, "crash", true) })
	t.Run("taken over", func(t *testing.T) { testTakenOver(t, cl, "taken") })
}
