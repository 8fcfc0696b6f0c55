package upstream

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream/upstreamtest"
)

func TestRetries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		statuses []int
		header   http.Header
		// retryAfterDate sends Retry-After as an HTTP date this far ahead
		// of the subtest's start (whole seconds: 1–2 s of wait).
		retryAfterDate time.Duration
		opts           []Option
		wantErr        []error // each must match errors.Is; empty = success
		wantHits       int
		minElapsed     time.Duration
	}{
		{name: "503 twice then success", statuses: []int{503, 503}, wantHits: 3},
		{name: "502 and 504 then success", statuses: []int{502, 504}, wantHits: 3},
		{name: "429 with Retry-After seconds then success", statuses: []int{429},
			header: http.Header{"Retry-After": {"1"}}, wantHits: 2, minElapsed: 900 * time.Millisecond},
		{name: "429 with Retry-After date then success", statuses: []int{429},
			retryAfterDate: 2 * time.Second, wantHits: 2, minElapsed: 900 * time.Millisecond},
		{name: "503 past the attempts", statuses: []int{503, 503, 503, 503, 503},
			wantErr: []error{ErrUnavailable}, wantHits: 4},
		{name: "429 past the attempts", statuses: []int{429, 429, 429, 429, 429},
			wantErr: []error{ErrTooManyRequests, ErrUnavailable}, wantHits: 4},
		{name: "Retry-After beyond the cap is not waited for", statuses: []int{429},
			header: http.Header{"Retry-After": {"3600"}}, wantErr: []error{ErrTooManyRequests}, wantHits: 1},
		{name: "500 is not retried", statuses: []int{500}, wantErr: []error{ErrUnavailable}, wantHits: 1},
		{name: "no retries when attempts is 1", statuses: []int{503}, opts: []Option{WithRetry(1, time.Millisecond)},
			wantErr: []error{ErrUnavailable}, wantHits: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture()
			if tt.retryAfterDate > 0 {
				tt.header = http.Header{"Retry-After": {time.Now().Add(tt.retryAfterDate).UTC().Format(http.TimeFormat)}}
			}
			fl := &faults{next: f.reg, path: manifestPath(testRepo, "latest"), pending: tt.statuses, header: tt.header}
			c := newTestClient(t, serve(t, upstreamtest.RequireBearer(fl)).URL, Registry{}, tt.opts...)
			start := time.Now()
			m, err := c.Manifest(testCtx(t), testRepo, "latest", false)
			elapsed := time.Since(start)
			if len(tt.wantErr) == 0 && (err != nil || m.Digest != f.manifest) {
				t.Fatalf("Manifest = %+v, %v; want success", m, err)
			}
			for _, want := range tt.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("err = %v, want errors.Is %v", err, want)
				}
			}
			if got := fl.count(); got != tt.wantHits {
				t.Errorf("upstream saw %d requests, want %d", got, tt.wantHits)
			}
			if elapsed < tt.minElapsed {
				t.Errorf("took %s, want at least %s (Retry-After)", elapsed, tt.minElapsed)
			}
		})
	}
}

func TestRetryAfterReportedInStatusError(t *testing.T) {
	t.Parallel()
	f := newFixture()
	fl := &faults{next: f.reg, path: manifestPath(testRepo, "latest"), pending: []int{429}, header: http.Header{"Retry-After": {"120"}}}
	c := newTestClient(t, serve(t, fl).URL, Registry{})
	_, err := c.Manifest(testCtx(t), testRepo, "latest", false)
	var se *StatusError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want *StatusError", err)
	}
	if se.Status != 429 || se.RetryAfter != 2*time.Minute || se.Code != "UNAVAILABLE" || se.Op != "fetch manifest" {
		t.Errorf("StatusError = %+v", se)
	}
}

func TestRetryWaitRespectsContext(t *testing.T) {
	t.Parallel()
	f := newFixture()
	fl := &faults{next: f.reg, path: manifestPath(testRepo, "latest"), pending: []int{429}, header: http.Header{"Retry-After": {"20"}}}
	c := newTestClient(t, serve(t, fl).URL, Registry{})
	ctx, cancel := context.WithTimeout(testCtx(t), 3*time.Second)
	defer cancel()
	// Had the client slept towards a deadline it could not meet, the call
	// would end with the context's DeadlineExceeded, not the 429.
	_, err := c.Manifest(ctx, testRepo, "latest", false)
	if !errors.Is(err, ErrTooManyRequests) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the 429 returned at once (the wait exceeds the deadline)", err)
	}
}

func TestConnectionRefusedIsUnavailable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dialer := &countingDialer{}
	c := newTestClient(t, "http://"+addr, Registry{}, WithDialer(dialer.DialContext))
	ctx := testCtx(t)

	_, err = c.Manifest(ctx, testRepo, "latest", false)
	if !IsUnavailable(err) || errors.Is(err, ErrNotFound) {
		t.Fatalf("Manifest: IsUnavailable(%v) = false, want true", err)
	}
	if _, err = c.Blob(ctx, testRepo, newFixture().blob); !IsUnavailable(err) {
		t.Errorf("Blob: IsUnavailable(%v) = false", err)
	}
	if dialer.n.Load() < 4 {
		t.Errorf("dials = %d, want the connection error retried", dialer.n.Load())
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Manifest(cancelled, testRepo, "latest", false); err == nil || IsUnavailable(err) {
		t.Errorf("cancelled caller: err = %v, IsUnavailable must be false", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-5", 0},
		{"7", 7 * time.Second},
		{" 7 ", 7 * time.Second},
		{"99999999", 24 * time.Hour},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"soon", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestJitter(t *testing.T) {
	t.Parallel()
	for attempt := 1; attempt <= 30; attempt++ {
		d := jitter(100*time.Millisecond, 5*time.Second, attempt)
		full := min(100*time.Millisecond<<min(attempt-1, 20), 5*time.Second)
		if d < full/2 || d > full {
			t.Errorf("attempt %d: %s outside [%s, %s]", attempt, d, full/2, full)
		}
	}
	if d := jitter(0, time.Second, 3); d != 0 {
		t.Errorf("zero base: %s", d)
	}
}

func TestStatusErrorIs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		op     string
		status int
		code   string
		is     []error
		isNot  []error
	}{
		{"fetch manifest", 404, "", []error{ErrNotFound}, []error{ErrUnavailable, ErrUnauthorized}},
		{"fetch manifest", 500, "MANIFEST_UNKNOWN", []error{ErrNotFound}, []error{ErrUnavailable}},
		{"fetch manifest", 401, "UNAUTHORIZED", []error{ErrUnauthorized}, []error{ErrNotFound, ErrDenied, ErrUnavailable}},
		{"fetch manifest", 401, "NAME_UNKNOWN", []error{ErrNotFound}, []error{ErrUnauthorized}},
		{"fetch manifest", 403, "DENIED", []error{ErrDenied}, []error{ErrUnauthorized, ErrUnavailable}},
		{"fetch manifest", 429, "TOOMANYREQUESTS", []error{ErrTooManyRequests, ErrUnavailable}, []error{ErrNotFound}},
		{"fetch manifest", 503, "", []error{ErrUnavailable}, []error{ErrTooManyRequests}},
		{"fetch manifest", 400, "", nil, []error{ErrNotFound, ErrUnavailable, ErrUnauthorized, ErrDenied, ErrTooManyRequests}},
		{"authenticate", 404, "", nil, []error{ErrNotFound, ErrUnavailable}},
		{"authenticate", 401, "", []error{ErrUnauthorized}, []error{ErrNotFound}},
		{"authenticate", 503, "", []error{ErrUnavailable}, []error{ErrNotFound}},
	}
	for _, tt := range tests {
		err := error(&StatusError{Op: tt.op, Status: tt.status, Code: tt.code})
		err = errors.Join(errors.New("wrapped"), err)
		for _, target := range tt.is {
			if !errors.Is(err, target) {
				t.Errorf("%s %d %s: not Is %v", tt.op, tt.status, tt.code, target)
			}
		}
		for _, target := range tt.isNot {
			if errors.Is(err, target) {
				t.Errorf("%s %d %s: Is %v", tt.op, tt.status, tt.code, target)
			}
		}
	}
}
