package clash

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
)

// SubscriptionSource fetches the raw subscription.
type SubscriptionSource interface {
	// Fetch returns the subscription's body. Errors wrap ErrSubscription
	// and never contain the subscription URL.
	Fetch(ctx context.Context) ([]byte, error)
}

// Defaults of HTTPSource.
const (
	DefaultMaxSubscriptionBytes = 4 << 20
	DefaultFetchTimeout         = 30 * time.Second
	maxRedirects                = 5
)

// UserAgent is sent with every fetch. Subscription servers look for
// "clash" in it to answer with Clash YAML (every node type) rather than
// base64 links.
const UserAgent = "clash.meta (k8s-selfhost-repo)"

// HTTPSource fetches a subscription over HTTP(S): at most MaxBytes, within
// Timeout, following at most 5 redirects.
type HTTPSource struct {
	url      string
	client   *http.Client
	maxBytes int64
	timeout  time.Duration
}

// SourceOption configures an HTTPSource.
type SourceOption func(*HTTPSource)

// WithMaxBytes caps the body; a larger one is an error.
func WithMaxBytes(n int64) SourceOption { return func(s *HTTPSource) { s.maxBytes = n } }

// WithFetchTimeout bounds one fetch, body included.
func WithFetchTimeout(d time.Duration) SourceOption { return func(s *HTTPSource) { s.timeout = d } }

// WithHTTPClient replaces the HTTP client (for its transport); its
// CheckRedirect is replaced by the source's own policy.
func WithHTTPClient(c *http.Client) SourceOption {
	return func(s *HTTPSource) { s.client = c }
}

// NewHTTPSource returns a source for rawURL, which must be http(s). The
// error does not contain the URL.
func NewHTTPSource(rawURL string, opts ...SourceOption) (*HTTPSource, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: the subscription URL is not an http(s) URL", ErrSubscription)
	}
	s := &HTTPSource{url: rawURL, client: &http.Client{}, maxBytes: DefaultMaxSubscriptionBytes, timeout: DefaultFetchTimeout}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Fetch implements SubscriptionSource.
func (s *HTTPSource) Fetch(ctx context.Context) ([]byte, error) {
	body, secrets, err := s.fetch(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrSubscription, scrubURL(err, secrets))
	}
	return body, nil
}

func (s *HTTPSource) fetch(ctx context.Context) ([]byte, []string, error) {
	secrets := urlSecrets(s.url)
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, secrets, err
	}
	req.Header.Set("User-Agent", UserAgent)
	req.Header.Set("Accept", "*/*")
	client := *s.client
	client.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		// A redirect target may carry a token too.
		secrets = append(secrets, urlSecrets(r.URL.String())...)
		if len(via) > maxRedirects {
			return fmt.Errorf("more than %d redirects", maxRedirects)
		}
		if r.URL.Scheme != "http" && r.URL.Scheme != "https" {
			return errors.New("redirect to a non-http(s) URL")
		}
		return nil
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, secrets, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, secrets, fmt.Errorf("the subscription server answered %s", resp.Status)
	}
	if resp.ContentLength > s.maxBytes {
		return nil, secrets, fmt.Errorf("the subscription is %d bytes, more than the %d allowed", resp.ContentLength, s.maxBytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, s.maxBytes+1))
	if err != nil {
		return nil, secrets, fmt.Errorf("read the subscription: %w", err)
	}
	if int64(len(body)) > s.maxBytes {
		return nil, secrets, fmt.Errorf("the subscription is larger than the %d bytes allowed", s.maxBytes)
	}
	return body, secrets, nil
}

// scrubURL is err's text without the URL: a *url.Error's own text starts
// with the method and URL, so only its cause is kept; the cause is then
// scrubbed of every part of the URL that may be a secret.
func scrubURL(err error, secrets []string) string {
	var ue *url.Error
	msg := err.Error()
	if errors.As(err, &ue) {
		msg = ue.Err.Error()
		if ue.Timeout() && !strings.Contains(msg, "timeout") && !strings.Contains(msg, "deadline") {
			msg += " (timeout)"
		}
	}
	return clashnode.RedactorOf(secrets...).Redact(msg)
}

// urlSecrets lists the parts of a URL that may carry a token: the whole
// URL in its spellings, user info, path, query and each query value. The
// host is kept: it is the useful part of an error.
func urlSecrets(raw string) []string {
	out := []string{raw}
	if u, err := url.Parse(raw); err == nil {
		out = append(out, u.String(), u.Redacted())
		if u.User != nil {
			out = append(out, u.User.String(), u.User.Username())
			if p, ok := u.User.Password(); ok {
				out = append(out, p)
			}
		}
		out = append(out, u.RawQuery, u.EscapedPath(), u.Path, u.Fragment)
		for _, vs := range u.Query() {
			out = append(out, vs...)
		}
	}
	return out
}
