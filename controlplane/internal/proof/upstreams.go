package proof

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sync"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/proxydial"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// ConfigFunc returns the configuration the namespace's edges receive: its
// upstreams carry exactly the credentials the namespace may use, so a proof
// "with the namespace's credentials" uses what its own edge would.
type ConfigFunc func(namespace string) (*selfhostv1.EdgeConfig, bool)

// UpstreamChecker implements Checker with real upstream requests, dialled
// through the Clash nodes of the namespace's configuration.
type UpstreamChecker struct {
	config ConfigFunc
	log    *slog.Logger
	opts   []upstream.Option

	mu      sync.Mutex
	clients map[clientKey]*upstream.Client
}

type clientKey struct {
	url, user, secret, proxy string
}

// maxClients bounds the cached clients; beyond it they are all dropped.
const maxClients = 512

// NewUpstreamChecker returns a checker; opts are added to every upstream
// client (tests pass TLS roots).
func NewUpstreamChecker(config ConfigFunc, log *slog.Logger, opts ...upstream.Option) *UpstreamChecker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &UpstreamChecker{config: config, log: log, opts: opts, clients: map[clientKey]*upstream.Client{}}
}

// find returns the namespace's upstream for prefix (or one of its aliases).
func (c *UpstreamChecker) find(namespace, prefix string) (*selfhostv1.EdgeConfig, *selfhostv1.Upstream, bool) {
	cfg, ok := c.config(namespace)
	if !ok {
		return nil, nil, false
	}
	allowed := cfg.GetPolicy().GetAllowedPrefixes()
	for _, u := range cfg.GetUpstreams() {
		if u.GetPrefix() != prefix && !slices.Contains(u.GetAliases(), prefix) {
			continue
		}
		if len(allowed) > 0 && !slices.Contains(allowed, u.GetPrefix()) {
			return nil, nil, false
		}
		return cfg, u, true
	}
	return nil, nil, false
}

// Allowed implements Checker.
func (c *UpstreamChecker) Allowed(namespace, prefix string) bool {
	_, _, ok := c.find(namespace, prefix)
	return ok
}

// HeadManifest implements Checker.
func (c *UpstreamChecker) HeadManifest(ctx context.Context, namespace, prefix, repository string, d oci.Digest, anonymous bool) (bool, error) {
	cfg, u, ok := c.find(namespace, prefix)
	if !ok {
		return false, fmt.Errorf("%w: %q", ErrUnknownUpstream, prefix)
	}
	user, pass := u.GetCredentials().GetUsername(), u.GetCredentials().GetPassword()
	if anonymous {
		user, pass = "", ""
	} else if user == "" && pass == "" {
		return false, nil
	}
	client, err := c.client(cfg, u, user, pass)
	if err != nil {
		return !anonymous, err
	}
	_, err = client.Manifest(ctx, repository, d.String(), true)
	return !anonymous, err
}

func (c *UpstreamChecker) client(cfg *selfhostv1.EdgeConfig, u *selfhostv1.Upstream, user, pass string) (*upstream.Client, error) {
	pool, err := proxydial.ParseSelection(cfg.GetProxy(), c.log)
	if err != nil {
		return nil, fmt.Errorf("proxy selection: %w", err)
	}
	nodes, err := pool.NodesFor("upstream "+u.GetPrefix(), u.GetProxy())
	if err != nil {
		return nil, err
	}
	proxy := ""
	for _, n := range nodes {
		proxy += n.Name() + "@" + n.Fingerprint() + ","
	}
	sum := sha256.Sum256([]byte(pass))
	key := clientKey{url: u.GetUrl(), user: user, secret: hex.EncodeToString(sum[:8]), proxy: proxy}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.clients[key]; ok {
		return cl, nil
	}
	base, err := url.Parse(u.GetUrl())
	if err != nil {
		return nil, fmt.Errorf("upstream %s url: %w", u.GetPrefix(), err)
	}
	opts := append([]upstream.Option{upstream.WithUserAgent("k8s-selfhost-repo-controlplane"),
		upstream.WithLogger(c.log), upstream.WithRetry(2, 0)}, c.opts...)
	if len(nodes) > 0 {
		dialer, err := proxydial.NewDialer(u.GetPrefix(), nodes, proxydial.WithLogger(c.log))
		if err != nil {
			return nil, err
		}
		opts = append(opts, upstream.WithDialer(dialer.DialContext))
	}
	cl, err := upstream.New(upstream.Registry{Prefix: u.GetPrefix(), URL: base, Username: user, Password: pass}, opts...)
	if err != nil {
		return nil, err
	}
	if len(c.clients) >= maxClients {
		for k, old := range c.clients {
			old.Close()
			delete(c.clients, k)
		}
	}
	c.clients[key] = cl
	return cl, nil
}
