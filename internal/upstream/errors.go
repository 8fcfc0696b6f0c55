package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Sentinels callers branch on. Every error the client returns wraps at most
// one of them; StatusError implements Is so that errors.Is works on the
// typed error too.
var (
	// ErrNotFound: the upstream does not have the repository, manifest or
	// blob (404, or one of the *_UNKNOWN codes under any status).
	ErrNotFound = errors.New("not found upstream")
	// ErrUnauthorized: 401 after the auth handshake was tried.
	ErrUnauthorized = errors.New("unauthorized upstream")
	// ErrDenied: 403, the credentials are known but lack access.
	ErrDenied = errors.New("access denied upstream")
	// ErrTooManyRequests: 429 that outlasted the retries.
	ErrTooManyRequests = errors.New("rate limited upstream")
	// ErrUnavailable: the upstream could not be reached, or answered 5xx or
	// 429. The cache uses it (through IsUnavailable) to serve stale content.
	ErrUnavailable = errors.New("upstream unavailable")
	// ErrDigestMismatch: a manifest body does not hash to the digest the
	// upstream announced or the reference asked for.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrTooLarge: a manifest or tag list exceeds the size limit.
	ErrTooLarge = errors.New("upstream response too large")
	// ErrNotManifest: the upstream answered a manifest request with
	// something else (an HTML login or error page, plain JSON): neither its
	// Content-Type nor its body's mediaType is an OCI or Docker manifest
	// type.
	ErrNotManifest = errors.New("upstream response is not a manifest")
)

// StatusError is a non-2xx answer of the upstream.
type StatusError struct {
	Op         string        // "fetch manifest", "check manifest" (HEAD), "fetch blob", "list tags", "authenticate"
	Status     int           // HTTP status code
	Code       string        // first OCI error code of the body, if it was JSON
	Message    string        // that error's message, truncated; never credentials
	RetryAfter time.Duration // parsed Retry-After, 0 when absent
}

// Error leaves Op out for request operations: the wrapping error already
// names them ("fetch manifest <ref>: upstream answered 404 …"). Only the
// auth handshake, which happens inside any operation, says so.
func (e *StatusError) Error() string {
	var b strings.Builder
	if e.Op == opAuthenticate {
		b.WriteString(opAuthenticate + ": ")
	}
	fmt.Fprintf(&b, "upstream answered %d %s", e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		b.WriteString(": " + e.Code)
		if e.Message != "" {
			b.WriteString(": " + e.Message)
		}
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

// Is maps the status and code onto the package's sentinels. A 404 from the
// auth handshake (a /v2/ or token endpoint that does not exist) is a
// misconfigured upstream, not a missing image, so it is never ErrNotFound.
func (e *StatusError) Is(target error) bool {
	notFound := e.Op != opAuthenticate && (e.Status == http.StatusNotFound || isNotFoundCode(e.Code))
	switch target {
	case ErrNotFound:
		return notFound
	case ErrUnauthorized:
		return !notFound && e.Status == http.StatusUnauthorized
	case ErrDenied:
		return !notFound && e.Status == http.StatusForbidden
	case ErrTooManyRequests:
		return e.Status == http.StatusTooManyRequests
	case ErrUnavailable:
		return !notFound && (e.Status >= 500 || e.Status == http.StatusTooManyRequests)
	}
	return false
}

func isNotFoundCode(code string) bool {
	switch code {
	case "MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN":
		return true
	}
	return false
}

// IsUnavailable reports whether err means the upstream could not be reached
// (dial failure, reset, timeout, TLS failure) or answered 5xx/429: the cases
// where serving a stale cached answer is better than failing. A definite
// answer (404, 401, 403, a bad digest) and a caller's cancellation are not.
func IsUnavailable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	return errors.Is(err, ErrUnavailable)
}

// opAuthenticate is the Op of a StatusError from the ping or the token
// endpoint.
const opAuthenticate = "authenticate"

// maxErrorBody bounds how much of an error response is read for its code.
const maxErrorBody = 64 << 10

// statusError builds a StatusError from resp and drains and closes its body.
func statusError(op string, resp *http.Response) *StatusError {
	defer resp.Body.Close()
	e := &StatusError{Op: op, Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e.Code, e.Message = firstErrorCode(body)
	return e
}

func firstErrorCode(body []byte) (code, msg string) {
	var doc struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &doc) != nil || len(doc.Errors) == 0 {
		return "", ""
	}
	const maxMsg = 200 // upstream-controlled text ends up in logs
	msg = doc.Errors[0].Message
	if len(msg) > maxMsg {
		msg = msg[:maxMsg] + "…"
	}
	return doc.Errors[0].Code, msg
}

// parseRetryAfter accepts delta-seconds or an HTTP date (RFC 9110, section 10.2.3).
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(24*time.Hour/time.Second) {
			secs = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// classify turns an error of http.Client.Do (or of the auth handshake) into
// the package's vocabulary. ggcr reports failed pings and token exchanges
// as *transport.Error; they become a StatusError with op "authenticate" so
// that a bad password is ErrUnauthorized and a token endpoint outage is
// ErrUnavailable. Network failures get ErrUnavailable; the caller's own
// cancellation stays as it is.
func classify(ctx context.Context, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		se := &StatusError{Op: opAuthenticate, Status: te.StatusCode}
		if len(te.Errors) > 0 {
			se.Code = string(te.Errors[0].Code)
		}
		return se
	}
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return err
	}
	if isNetworkError(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// isNetworkError reports whether err is a failure to get an answer at all.
// http.Client wraps every transport failure in *url.Error (which is a
// net.Error), so this also covers TLS failures and redirect loops: for the
// stale-serving decision they mean the same as a refused connection.
func isNetworkError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, context.DeadlineExceeded)
}

// readError wraps a failure while reading a response body: anything but the
// caller's cancellation means the upstream stream broke.
func readError(ctx context.Context, err error) error {
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// redactURLError drops the query from the URL that http.Client puts in
// its errors: after a redirect it is the object store's presigned URL,
// whose signature is a credential.
func redactURLError(err error) error {
	ue, ok := err.(*url.Error)
	if !ok {
		return err
	}
	u, perr := url.Parse(ue.URL)
	if perr != nil {
		return &url.Error{Op: ue.Op, URL: "(unparsable URL)", Err: ue.Err}
	}
	u.RawQuery, u.Fragment, u.User = "", "", nil
	return &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
}
