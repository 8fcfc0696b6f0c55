package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
)

// Registry is one configured upstream.
type Registry struct {
	Prefix   string   // edge path prefix, e.g. "dockerhub" (for logs/metrics)
	URL      *url.URL // scheme://host[:port]; http:// allowed (tests, internal registries)
	Username string   // optional credentials (Basic, or exchanged for a Bearer token)
	Password string
}

// DialContextFunc is how the client opens TCP connections; the Clash issue
// plugs a mihomo proxy dialer in here.
type DialContextFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Manifest is a manifest as the upstream served it, byte for byte.
type Manifest struct {
	Body        []byte // nil for HEAD
	ContentType string
	// Digest is Docker-Content-Digest when the upstream sent one (validated),
	// else the reference when it is a digest, else computed from Body; zero
	// for a HEAD by tag without the header.
	Digest oci.Digest
	Size   int64 // len(Body) for GET, Content-Length for HEAD (-1 unknown)
}

// Blob is an upstream blob body. The caller closes Body and verifies the
// digest while streaming; nothing is buffered here.
type Blob struct {
	Body io.ReadCloser
	Size int64 // -1 unknown
}

// TagList is the upstream's tag list, passed through. Link is the upstream's
// pagination header as sent: its path names the upstream repository, so the
// edge has to rewrite it before handing it to a client.
type TagList struct {
	Body        []byte
	ContentType string
	Link        string
}

// Fetcher is what the edge needs from an upstream.
type Fetcher interface {
	Manifest(ctx context.Context, repository, reference string, head bool) (*Manifest, error)
	Blob(ctx context.Context, repository string, d oci.Digest) (*Blob, error)
	// BlobSize checks the blob with HEAD and returns its size (-1 when
	// the upstream sent no length).
	BlobSize(ctx context.Context, repository string, d oci.Digest) (int64, error)
	Tags(ctx context.Context, repository string, query url.Values) (*TagList, error)
}

var _ Fetcher = (*Client)(nil)

// Client fetches from one upstream registry. It is safe for concurrent use.
type Client struct {
	nameReg name.Registry
	host    string // nameReg.RegistryStr(): what ggcr matches Authorization against
	scheme  string
	auth    authn.Authenticator
	opts    options
	http    *http.Transport
	base    http.RoundTripper
	auths   *authCache
	log     *slog.Logger
}

// New returns a Client for reg.
func New(reg Registry, opts ...Option) (*Client, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if reg.URL == nil {
		return nil, errors.New("upstream: registry URL is required")
	}
	u := reg.URL
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("upstream %s: URL scheme must be http or https, got %q", reg.Prefix, u.Scheme)
	}
	if u.User != nil {
		// Credentials in the URL would end up in every log line and error.
		return nil, fmt.Errorf("upstream %s: put credentials in Username/Password, not in the URL", reg.Prefix)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Host == "" {
		return nil, fmt.Errorf("upstream %s: URL must be scheme://host[:port], got %s", reg.Prefix, u.Redacted())
	}
	var nopts []name.Option
	if u.Scheme == "http" {
		nopts = append(nopts, name.Insecure)
	}
	nreg, err := name.NewRegistry(u.Host, nopts...)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", reg.Prefix, err)
	}
	auth := authn.Anonymous
	if reg.Username != "" || reg.Password != "" {
		auth = authn.FromConfig(authn.AuthConfig{Username: reg.Username, Password: reg.Password})
	}

	c := &Client{
		nameReg: nreg,
		host:    nreg.RegistryStr(),
		scheme:  u.Scheme,
		auth:    auth,
		opts:    o,
		log:     o.logger.With("upstream", reg.Prefix, "host", nreg.RegistryStr()),
	}
	var guard *addrGuard
	if !o.internalRedirects {
		guard = newAddrGuard(u.Host)
	}
	c.http = newHTTPTransport(o, guard)
	c.base = &edgeTransport{
		host:      c.host,
		scheme:    c.scheme,
		userAgent: o.userAgent,
		next: &retryTransport{
			next:     c.http,
			attempts: o.attempts,
			backoff:  o.backoff,
			maxWait:  o.maxRetryWait,
			log:      c.log,
		},
	}
	c.auths = newAuthCache(o.authCacheSize, o.authTTL)
	return c, nil
}

// Close releases idle connections. In-flight requests are not interrupted.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// newHTTPTransport clones http.DefaultTransport's tuning and replaces what
// matters for a registry client.
func newHTTPTransport(o options, guard *addrGuard) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if o.dial != nil {
		t.DialContext = o.dial
		if guard != nil {
			t.DialContext = guard.wrap(o.dial, false)
		}
		// The dialer is the proxy; an environment proxy on top would tunnel
		// twice.
		t.Proxy = nil
	} else {
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		t.DialContext = d.DialContext
		if guard != nil {
			d.ControlContext = guard.control
			t.DialContext = guard.wrap(d.DialContext, true)
		}
	}
	if o.tlsConfig != nil {
		t.TLSClientConfig = o.tlsConfig.Clone()
	}
	// A custom DialContext or TLS config turns HTTP/2 off unless forced.
	t.ForceAttemptHTTP2 = true
	// Layers are served as-is: transparent gzip decoding would change the
	// bytes the caller hashes.
	t.DisableCompression = true
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 32
	t.IdleConnTimeout = 90 * time.Second
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = o.headerTimeout
	return t
}

// Option configures a Client.
type Option func(*options)

type options struct {
	dial          DialContextFunc
	userAgent     string
	attempts      int
	backoff       time.Duration
	maxRetryWait  time.Duration
	headerTimeout time.Duration
	bodyIdle      time.Duration
	// internalRedirects lifts the address-class rule (addrGuard).
	internalRedirects bool
	logger            *slog.Logger
	tlsConfig         *tls.Config
	authCacheSize     int
	authTTL           time.Duration
}

func defaultOptions() options {
	return options{
		userAgent:     "k8s-selfhost-repo-edge",
		attempts:      4,
		backoff:       200 * time.Millisecond,
		maxRetryWait:  30 * time.Second,
		headerTimeout: 30 * time.Second,
		bodyIdle:      DefaultBodyIdleTimeout,
		logger:        slog.New(slog.DiscardHandler),
		authCacheSize: 512,
		authTTL:       30 * time.Minute,
	}
}

// WithDialer sets how TCP connections are opened (a Clash node's dialer).
func WithDialer(d DialContextFunc) Option { return func(o *options) { o.dial = d } }

// WithUserAgent sets the User-Agent header (default "k8s-selfhost-repo-edge").
func WithUserAgent(ua string) Option { return func(o *options) { o.userAgent = ua } }

// WithRetry sets the total number of attempts of an idempotent request (1 =
// no retry) and the first backoff, which doubles per attempt with jitter.
func WithRetry(attempts int, baseBackoff time.Duration) Option {
	return func(o *options) {
		o.attempts = max(attempts, 1)
		o.backoff = max(baseBackoff, 0)
	}
}

// WithMaxRetryWait caps how long a Retry-After is honoured (default 30 s).
// A longer Retry-After is not waited for: the 429 is returned at once with
// StatusError.RetryAfter set, because retrying early would only spend more
// of the rate limit.
func WithMaxRetryWait(d time.Duration) Option { return func(o *options) { o.maxRetryWait = d } }

// WithTimeout bounds the wait for response headers (default 30 s). Bodies
// are not bounded: a large layer may stream for minutes; use ctx for that.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.headerTimeout = d } }

// DefaultBodyIdleTimeout is how long a blob body may deliver nothing.
const DefaultBodyIdleTimeout = 60 * time.Second

// WithBodyIdleTimeout ends a blob body that delivers no byte for d while
// it is being read (default DefaultBodyIdleTimeout; zero or negative: no
// limit). A stalled upstream (a half-dead connection, a proxy that stopped
// forwarding) otherwise holds a fill, its slot and its waiting clients
// until the fill's overall timeout. Time the caller spends between reads
// does not count.
func WithBodyIdleTimeout(d time.Duration) Option { return func(o *options) { o.bodyIdle = d } }

// WithInternalRedirects lets redirects and token realms go to addresses
// more internal than the upstream's own (loopback, link-local such as the
// cloud metadata service, private ranges). By default a connection to any
// host but the upstream's is refused when its address class is more
// internal than the upstream's: an upstream on 127.0.0.1 may redirect
// anywhere, an upstream on the internet only to the internet.
func WithInternalRedirects() Option { return func(o *options) { o.internalRedirects = true } }

// WithLogger sets the structured logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithTLSConfig sets the TLS client configuration (self-signed upstreams in
// tests, private CAs).
func WithTLSConfig(c *tls.Config) Option { return func(o *options) { o.tlsConfig = c } }

// WithAuthCache bounds the per-repository auth transports kept (default
// 512) and how long one is reused before the registry is pinged again
// (default 30 min), which picks up a registry that changed its auth scheme.
func WithAuthCache(size int, ttl time.Duration) Option {
	return func(o *options) {
		o.authCacheSize = max(size, 1)
		o.authTTL = ttl
	}
}
