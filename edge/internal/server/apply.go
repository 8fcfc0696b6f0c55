package server

import (
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/brokerstore"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/configclient"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/registry"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/route"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/proxydial"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// fillLimiter is the part of the cache a configuration sets besides the
// upstreams: the per-edge bounds on upstream blob fills and on the rate
// of upstream requests.
type fillLimiter interface {
	SetMaxFills(n int)
	SetUpstreamRate(rate, burst int)
}

// configApplier applies control-plane snapshots (configclient.Applier): it
// builds a whole upstreamSnapshot, swaps it in with one pointer store, then
// sets the fill limit.
type configApplier struct {
	set     *upstreamSet
	fills   fillLimiter
	proxies *proxies
	log     *slog.Logger
	opts    []upstream.Option
	// storage is set with --storage=control-plane: every configuration
	// must then carry storage.brokered (never storage.s3), and the first
	// one opens the storage.
	storage *brokerstore.Deferred
	// allowInternal names the upstream prefixes whose redirects may go to
	// more internal addresses (--allow-internal-redirects).
	allowInternal map[string]bool
	// limits are --max-upstream-rps and --upstream-burst, for a policy
	// that leaves them zero.
	limits UpstreamLimits
	mu     sync.Mutex // one Apply at a time: each builds on the previous snapshot
}

var _ configclient.Applier = (*configApplier)(nil)

// Apply implements configclient.Applier. Its errors name the offending field.
func (a *configApplier) Apply(cfg *selfhostv1.EdgeConfig) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var openStorage func()
	if a.storage != nil {
		var err error
		if openStorage, err = a.storage.Prepare(cfg.GetStorage()); err != nil {
			return err
		}
	}
	old := a.set.cur.Load()
	next, err := configSnapshot(cfg, old, a.allowInternal, a.proxies, a.log, a.opts...)
	if err != nil {
		return err
	}
	a.set.cur.Store(next)
	a.fills.SetMaxFills(int(cfg.GetPolicy().GetMaxConcurrentFills()))
	a.fills.SetUpstreamRate(a.limits.resolve(cfg.GetPolicy()))
	retire(old, next)
	if openStorage != nil {
		// After the upstreams: the first request the open store lets
		// through already sees this configuration.
		openStorage()
	}
	return nil
}

// configSnapshot builds the snapshot of an EdgeConfig. The snapshot is the
// whole truth (state of the world): the flag defaults do not survive it.
func configSnapshot(cfg *selfhostv1.EdgeConfig, prev *upstreamSnapshot, allowInternal map[string]bool, px *proxies, log *slog.Logger, opts ...upstream.Option) (*upstreamSnapshot, error) {
	snap := &upstreamSnapshot{version: cfg.GetVersion(), tagTTL: map[string]time.Duration{}}
	pool, err := proxydial.ParseSelection(cfg.GetProxy(), log)
	if err != nil {
		return nil, err
	}
	var routes []route.Upstream
	var specs []upstreamSpec
	for i, u := range cfg.GetUpstreams() {
		field := fmt.Sprintf("upstreams[%d]", i)
		pu, err := url.Parse(u.GetUrl())
		if err != nil {
			// url's error quotes the URL; the field is enough.
			return nil, fmt.Errorf("%s.url: does not parse", field)
		}
		pu.Path = ""
		r := route.Upstream{Prefix: u.GetPrefix(), Aliases: u.GetAliases(), URL: pu, Hosts: u.GetHosts()}
		nodes, err := pool.NodesFor(field, u.GetProxy())
		if err != nil {
			return nil, err
		}
		routes = append(routes, r)
		specs = append(specs, upstreamSpec{field: field, route: r, nodes: nodes,
			creds:             Credentials{Username: u.GetCredentials().GetUsername(), Password: u.GetCredentials().GetPassword()},
			internalRedirects: allowInternal[u.GetPrefix()]})
		if d := u.GetTagTtl(); d != nil {
			snap.tagTTL[u.GetPrefix()] = d.AsDuration()
		}
	}
	table, err := route.NewTable(routes)
	if err != nil {
		return nil, fmt.Errorf("upstreams: %w", err)
	}
	snap.table = table
	for i, p := range cfg.GetPolicy().GetAllowedPrefixes() {
		if u, ok := table.Lookup(p); !ok || u.Prefix != p {
			return nil, fmt.Errorf("policy.allowed_prefixes[%d]: %q is not the prefix of a configured upstream", i, p)
		}
	}
	snap.policy = registry.NewPolicy(cfg.GetPolicy().GetAllowedPrefixes(), cfg.GetPolicy().GetPullToken())
	if err := buildClients(snap, specs, prev, px, log, opts...); err != nil {
		return nil, err
	}
	return snap, nil
}
