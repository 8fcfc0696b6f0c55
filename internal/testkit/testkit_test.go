package testkit

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLogBufferConcurrent(t *testing.T) {
	t.Parallel()
	var logs LogBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				log.Info("line", "writer", i, "n", j)
				_ = logs.String()
			}
		})
	}
	wg.Wait()
	if n := logs.Count("msg=line"); n != 8*50 {
		t.Fatalf("%d lines, want %d", n, 8*50)
	}
	if n := logs.Count("writer=3 "); n != 50 {
		t.Fatalf("%d lines of writer 3, want 50", n)
	}
	if n := logs.Count("nowhere"); n != 0 {
		t.Fatalf("Count of an absent string = %d", n)
	}
}

func TestDiffLines(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ want, got, diff string }{
		{"a\nb\n", "a\nb\n", ""},
		{"a\nb\n", "a\nc\n", "line 2:\n- b\n+ c"},
		{"a\n", "a\nb", "line 2:\n- \n+ b"},
		{"a\nb", "a", "line 2:\n- b\n+ "},
	} {
		if d := DiffLines(tc.want, tc.got); d != tc.diff {
			t.Errorf("DiffLines(%q, %q) = %q, want %q", tc.want, tc.got, d, tc.diff)
		}
	}
}

// recorder keeps what a helper reports instead of failing the test.
type recorder struct {
	testing.TB
	mu       sync.Mutex
	failed   bool
	messages []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = true
	r.messages = append(r.messages, fmt.Sprintf(format, args...))
}

// Fatalf records and ends the helper's goroutine, as testing.T does.
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

// run runs f with r in a goroutine of its own, so Fatalf may end it.
func (r *recorder) run(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

func TestGolden(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "x.golden")

	r := &recorder{TB: t}
	r.run(func() { Golden(r, path, "a\n", false) })
	if !r.failed || !strings.Contains(r.messages[0], "run go test -update once") {
		t.Fatalf("missing file: %v", r.messages)
	}

	r = &recorder{TB: t}
	r.run(func() { Golden(r, path, "a\nb\n", true) })
	if b, err := os.ReadFile(path); r.failed || err != nil || string(b) != "a\nb\n" {
		t.Fatalf("update: %q, %v, %v", b, err, r.messages)
	}

	r = &recorder{TB: t}
	r.run(func() { Golden(r, path, "a\nb\n", false) })
	if r.failed {
		t.Fatalf("equal output: %v", r.messages)
	}

	r = &recorder{TB: t}
	r.run(func() { Golden(r, path, "a\nc\n", false) })
	if !r.failed || !strings.Contains(r.messages[0], "line 2:\n- b\n+ c") {
		t.Fatalf("differing output: %v", r.messages)
	}
}

func TestWaitFor(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	WaitFor(t, "the third poll", 10*time.Second, func() bool { return n.Add(1) == 3 })

	r := &recorder{TB: t}
	r.run(func() { WaitFor(r, "never", 50*time.Millisecond, func() bool { return false }) })
	if !r.failed || !strings.Contains(r.messages[0], "waiting for never") {
		t.Fatalf("timeout: %v", r.messages)
	}
}
