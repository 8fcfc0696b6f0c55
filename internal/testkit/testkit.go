// Package testkit holds small helpers that the tests of several packages
// share: a log sink goroutines may write to while the test reads it, a
// golden-file comparison, the one wait-for-a-condition helper, the one
// free-port helper and the marker of integration tests (see wait.go,
// port.go, integration.go). It is for tests and test/harness only;
// production code must not import it.
package testkit

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

// LogBuffer is an io.Writer for a slog handler that is safe for
// concurrent writes and reads. The zero value is ready to use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Count is how many lines written so far contain s.
func (b *LogBuffer) Count(s string) int {
	n := 0
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// Golden compares got with the file at path; with update it first
// writes got there (a test's -update flag).
func Golden(t testing.TB, path, got string, update bool) {
	t.Helper()
	if update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update once to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it; review the diff):\n%s", path, DiffLines(string(want), got))
	}
}

// DiffLines shows the first line where want and got differ, "" when they
// are equal; enough to see what changed.
func DiffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, wl, gl)
		}
	}
	return ""
}
