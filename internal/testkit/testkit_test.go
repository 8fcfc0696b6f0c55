package testkit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
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
	var m atomic.Int32
	WaitFor(t, "the third poll", 10*time.Second, func() error {
		if m.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	})

	for _, tc := range []struct {
		name string
		wait func(testing.TB)
		want string
	}{
		{"bool", func(tb testing.TB) {
			WaitFor(tb, "never", 50*time.Millisecond, func() bool { return false })
		}, "waiting for never: not done after 50ms: condition still false"},
		{"error", func(tb testing.TB) {
			WaitFor(tb, "never", 50*time.Millisecond, func() error { return errors.New("3 of 4 ready") })
		}, "waiting for never: not done after 50ms: 3 of 4 ready"},
	} {
		r := &recorder{TB: t}
		r.run(func() { tc.wait(r) })
		if !r.failed || r.messages[0] != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, r.messages, tc.want)
		}
	}
}

// TestPollBackoff runs on the fake clock: the first call is at once, the
// retries back off from 1 ms to at most 50 ms, and the last retry is at
// the deadline, not after it.
func TestPollBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var at []time.Duration
		err := Poll(t.Context(), 200*time.Millisecond, func() bool {
			at = append(at, time.Since(start))
			return false
		})
		want := []time.Duration{0, 1, 3, 7, 15, 31, 63, 113, 163, 200}
		for i := range want {
			want[i] *= time.Millisecond
		}
		if !slices.Equal(at, want) {
			t.Errorf("calls at %v, want %v", at, want)
		}
		if err == nil || !errors.Is(err, errNotYet) {
			t.Errorf("err = %v, want one wrapping %v", err, errNotYet)
		}
	})
}

func TestPollContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	last := errors.New("still 2 pods")
	err := Poll(ctx, time.Hour, func() error { return last })
	if !errors.Is(err, context.Canceled) || !errors.Is(err, last) {
		t.Fatalf("err = %v, want context.Canceled and the last error", err)
	}
	if err := Poll(ctx, time.Hour, func() bool { return true }); err != nil {
		t.Fatalf("a condition that holds at once: %v", err)
	}
}

func TestFreePort(t *testing.T) {
	t.Parallel()
	addr := FreeAddr(t)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on the free address %s: %v", addr, err)
	}
	l.Close()
	if p := FreePort(t); p <= 0 || p > 65535 {
		t.Fatalf("FreePort = %d", p)
	}
}

// skipRecorder records a skip instead of skipping the real test.
type skipRecorder struct {
	recorder
	skipped string
}

func (r *skipRecorder) Skip(args ...any) {
	r.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}

func TestIntegration(t *testing.T) {
	t.Parallel()
	r := &skipRecorder{recorder: recorder{TB: t}}
	r.run(func() { Integration(r) })
	if testing.Short() != (r.skipped != "") {
		t.Fatalf("short %v, skipped %q", testing.Short(), r.skipped)
	}
	if testing.Short() && !strings.Contains(r.skipped, "./test/all.sh") {
		t.Fatalf("skip message %q does not say how to run it", r.skipped)
	}
}

// TestServePipe: a request over the in-memory network inside a bubble,
// with the handler sleeping an hour on the fake clock.
func TestServePipe(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(time.Hour)
			_, _ = io.WriteString(w, r.Host+r.URL.Path)
		})
		client := &http.Client{Transport: &http.Transport{DialContext: ServePipe(t, h)}}
		start := time.Now()
		resp, err := client.Get("http://anything.test/x")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "anything.test/x" {
			t.Fatalf("body %q, %v", b, err)
		}
		if el := time.Since(start); el != time.Hour {
			t.Fatalf("answered after %v on the fake clock, want 1h", el)
		}
		client.CloseIdleConnections()
	})
}
