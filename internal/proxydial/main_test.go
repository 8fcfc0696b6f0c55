package proxydial_test

import (
	"os"
	"sync"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/proxydial"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

func TestMain(m *testing.M) {
	clashnode.Setup()
	os.Exit(harness.Main(m))
}

// recorder is an Observer that keeps everything.
type recorder struct {
	mu        sync.Mutex
	dials     map[string]int // "node/result" → count
	failovers int
	failures  []proxydial.Failure
}

func newRecorder() *recorder { return &recorder{dials: map[string]int{}} }

func (r *recorder) Dialed(node, result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dials[node+"/"+result]++
}

func (r *recorder) FailedOver() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failovers++
}

func (r *recorder) Failed(f proxydial.Failure) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, f)
}

func (r *recorder) count(node, result string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dials[node+"/"+result]
}

func (r *recorder) snapshot() (failovers int, failures []proxydial.Failure) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failovers, append([]proxydial.Failure(nil), r.failures...)
}
