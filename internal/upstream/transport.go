package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"time"
)

// edgeTransport pins the configured scheme for the registry host and sets
// the User-Agent. It sits beneath ggcr's layers, so its User-Agent wins over
// the one ggcr sets, and ggcr's ping sees the scheme that was really used.
type edgeTransport struct {
	host      string // registry host[:port]
	scheme    string // "http" or "https", from the configured URL
	userAgent string
	next      http.RoundTripper
}

func (t *edgeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// A RoundTripper must not modify its request; ggcr and http.Client may
	// reuse it.
	out := req.Clone(req.Context())
	if t.userAgent != "" {
		out.Header.Set("User-Agent", t.userAgent)
	}
	if sameHost(out.URL.Host, t.host) {
		out.URL.Scheme = t.scheme
	}
	return t.next.RoundTrip(out)
}

// sameHost compares host[:port] values, ignoring the default ports 80 and
// 443 (ggcr writes the registry without a port, a redirect may add one).
func sameHost(a, b string) bool {
	return strings.EqualFold(stripDefaultPort(a), stripDefaultPort(b))
}

func stripDefaultPort(h string) string {
	if host, port, err := net.SplitHostPort(h); err == nil && (port == "80" || port == "443") {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return h
}

// retryTransport retries idempotent requests on connection errors, 502,
// 503, 504 and 429. It returns as soon as it has a response worth handing
// up, so a body already returned is never re-requested.
type retryTransport struct {
	next     http.RoundTripper
	attempts int           // total attempts, >= 1
	backoff  time.Duration // first backoff; doubles per attempt, with jitter
	maxWait  time.Duration // cap on one wait; a longer Retry-After is not waited for
	log      *slog.Logger
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.attempts <= 1 || !replayable(req) {
		return t.next.RoundTrip(req)
	}
	ctx := req.Context()
	for attempt := 1; ; attempt++ {
		resp, err := t.next.RoundTrip(req)
		if attempt >= t.attempts {
			return resp, err
		}
		wait, ok := t.retryAfter(req, resp, err, attempt)
		if !ok {
			return resp, err
		}
		if deadline, has := ctx.Deadline(); has && time.Until(deadline) < wait {
			// Sleeping past the deadline only turns a useful answer into
			// context.DeadlineExceeded.
			return resp, err
		}
		attrs := []any{"method", req.Method, "url", req.URL.Host + req.URL.Path, "attempt", attempt, "wait", wait}
		if resp != nil {
			attrs = append(attrs, "status", resp.StatusCode)
			drain(resp)
		} else {
			attrs = append(attrs, "error", err.Error())
		}
		t.log.Log(ctx, slog.LevelInfo, "retrying upstream request", attrs...)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-timer.C:
		}
	}
}

// retryAfter decides whether the outcome of attempt is retried and after
// how long.
func (t *retryTransport) retryAfter(req *http.Request, resp *http.Response, err error, attempt int) (time.Duration, bool) {
	backoff := t.jittered(attempt)
	if err != nil {
		if req.Context().Err() != nil || permanent(err) {
			return 0, false
		}
		return backoff, true
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusTooManyRequests:
	default:
		return 0, false
	}
	if ra := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ra > 0 {
		if ra > t.maxWait {
			return 0, false
		}
		return max(ra, backoff), true
	}
	return backoff, true
}

// jittered returns backoff·2^(attempt-1), capped at maxWait, drawn
// uniformly from its upper half so that many edges hit by one outage do
// not retry in lockstep.
func (t *retryTransport) jittered(attempt int) time.Duration {
	return jitter(t.backoff, t.maxWait, attempt)
}

func jitter(base, maxWait time.Duration, attempt int) time.Duration {
	if base <= 0 {
		return 0
	}
	d := base << min(attempt-1, 20)
	if d <= 0 || d > maxWait {
		d = maxWait
	}
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half)
}

// replayable: only GET and HEAD without a body are sent twice. Everything
// the client sends is of that kind except ggcr's OAuth token POST.
func replayable(req *http.Request) bool {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return false
	}
	return req.Body == nil || req.Body == http.NoBody
}

// permanent reports errors that another attempt cannot fix: a certificate
// the client does not trust stays untrusted, a plain-HTTP server stays
// plain.
func permanent(err error) bool {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verify           *tls.CertificateVerificationError
		notTLS           tls.RecordHeaderError
	)
	return errors.Is(err, ErrInternalAddress) || errors.As(err, &unknownAuthority) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &verify) || errors.As(err, &notTLS)
}

// drain reads a little of a discarded response so its connection can be
// reused, then closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}
