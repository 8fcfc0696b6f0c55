// Package snapshot turns a config.State into immutable, validated,
// versioned snapshots: one EdgeConfig per namespace, exactly what that
// namespace's edges receive. A Set is built in full and validated with
// configspec before anything uses it, so a configuration an edge would
// NACK never leaves the control plane.
package snapshot

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/rewrite"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// Set is every namespace's snapshot plus the global view the admin API
// shows. Nothing in a Set may be modified after Build returns: it is shared
// by every connection and every reader.
type Set struct {
	// Version changes whenever anything in the Set changes.
	Version string
	// Upstreams sorted by prefix, credentials included.
	Upstreams []*selfhostv1.Upstream
	// Proxy summarises the proxy selection every namespace receives; nil
	// when Clash is disabled.
	Proxy      *ProxySummary
	namespaces map[string]*Namespace
}

// Namespace is one namespace's snapshot.
type Namespace struct {
	Name string
	// Config is the EdgeConfig sent to the namespace's edges, with Version
	// set and Nonce empty (each send gets its own nonce, see WithNonce).
	// Its Upstreams are the namespace's: only those its policy allows, each
	// with the credentials the namespace uses for it (its own from its
	// tenant's Secret, else the operator's). They are what "the
	// namespace's credentials" means anywhere in the control plane.
	Config *selfhostv1.EdgeConfig
	// EdgeAddress is the configured address image references are rewritten
	// to; a connected edge's own address takes precedence.
	EdgeAddress string
}

// Namespace returns one namespace's snapshot.
func (s *Set) Namespace(name string) (*Namespace, bool) {
	ns, ok := s.namespaces[name]
	return ns, ok
}

// NamespaceNames returns the namespaces, sorted.
func (s *Set) NamespaceNames() []string {
	return slices.Sorted(maps.Keys(s.namespaces))
}

// MaxConfigBytes bounds one encoded EdgeConfig: 4 MiB is what a gRPC
// client accepts by default, so a larger snapshot could never reach an
// edge. The admin API's 1 MiB request limit bounds one upstream, not the
// sum of them.
const MaxConfigBytes = 4 << 20

// Builder builds Sets. The zero value is ready to use.
type Builder struct {
	// Limits are the upstream limits of namespaces that set none
	// (--namespace-max-upstream-rps, --namespace-upstream-burst).
	Limits UpstreamLimits
}

// UpstreamLimits are NamespacePolicy's max_upstream_requests_per_second
// and upstream_burst; zero leaves the edge's default.
type UpstreamLimits struct {
	RPS   uint32
	Burst uint32
}

// Build validates st and builds its Set. Errors wrap configspec.ErrInvalid
// and name the namespace and the field.
func (bd Builder) Build(st *config.State) (*Set, error) {
	ups := config.CloneUpstreams(st.Upstreams)
	slices.SortFunc(ups, func(a, b *selfhostv1.Upstream) int { return cmp.Compare(a.GetPrefix(), b.GetPrefix()) })
	// Validated once on their own, so a bad upstream is reported even when
	// no namespace is configured.
	if err := configspec.ValidateUpstreams("upstreams", ups); err != nil {
		return nil, err
	}
	if err := checkHosts(ups); err != nil {
		return nil, err
	}
	proxy, edgeUps, summary := proxySelection(st, ups)
	// Shared and read-only like the upstreams; it carries no credentials:
	// edges reach the storage through the broker.
	if err := configspec.ValidateStorage("storage", st.Storage.Proto()); err != nil {
		return nil, err
	}
	storage := st.Storage.EdgeProto()
	set := &Set{Upstreams: ups, Proxy: summary, namespaces: make(map[string]*Namespace, len(st.Namespaces))}
	global := sha256.New()
	for _, u := range ups {
		b, err := marshal(u)
		if err != nil {
			return nil, err
		}
		global.Write(b)
	}
	if proxy != nil {
		b, err := marshal(proxy)
		if err != nil {
			return nil, err
		}
		global.Write(b)
	}
	for _, name := range st.NamespaceNames() {
		ns := st.Namespaces[name]
		c := &selfhostv1.EdgeConfig{
			Namespace: name,
			// Only the upstreams the namespace may use, with its own
			// credentials where it has some: everything an edge holds, its
			// tenant holds.
			Upstreams: namespaceUpstreams(edgeUps, ns),
			Proxy:     proxy,
			Storage:   storage,
			Policy: &selfhostv1.NamespacePolicy{
				AllowedPrefixes:              slices.Clone(ns.AllowedPrefixes),
				PullToken:                    ns.PullToken.Reveal(),
				MaxConcurrentFills:           ns.MaxConcurrentFills,
				MaxUpstreamRequestsPerSecond: cmp.Or(ns.MaxUpstreamRPS, bd.Limits.RPS),
				UpstreamBurst:                cmp.Or(ns.UpstreamBurst, bd.Limits.Burst),
			},
		}
		v, err := Version(c)
		if err != nil {
			return nil, fmt.Errorf("namespace %q: %w", name, err)
		}
		c.Version = v
		if err := configspec.ValidateEdgeConfig(c); err != nil {
			return nil, fmt.Errorf("namespace %q: %w", name, err)
		}
		if n := proto.Size(c); n > MaxConfigBytes {
			return nil, fmt.Errorf("%w: namespace %q: the snapshot would be %d bytes, more than the %d an edge accepts", configspec.ErrInvalid, name, n, MaxConfigBytes)
		}
		set.namespaces[name] = &Namespace{Name: name, Config: c, EdgeAddress: ns.EdgeAddress}
		fmt.Fprintf(global, "\x00%s\x00%s\x00%s", name, c.Version, ns.EdgeAddress)
	}
	set.Version = hex.EncodeToString(global.Sum(nil))[:16]
	return set, nil
}

// Version is the content version of an EdgeConfig: the first 16 hex digits
// of the SHA-256 of its deterministic encoding with version and nonce
// cleared. Equal content gives equal versions in every process, so an edge
// reconnecting to a restarted control plane sees that nothing changed.
func Version(c *selfhostv1.EdgeConfig) (string, error) {
	clean := WithNonce(c, "")
	clean.Version = ""
	b, err := marshal(clean)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:16], nil
}

// WithNonce returns a shallow copy of c with the given nonce: the fields
// are shared with c (read-only), so a send costs no deep copy.
func WithNonce(c *selfhostv1.EdgeConfig, nonce string) *selfhostv1.EdgeConfig {
	out := &selfhostv1.EdgeConfig{}
	dst := out.ProtoReflect()
	c.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		dst.Set(fd, v)
		return true
	})
	out.Nonce = nonce
	return out
}

// ChangedNamespaces lists the namespaces whose EdgeConfig differs between
// old and next (added, removed or new version), sorted.
func ChangedNamespaces(old, next *Set) []string {
	var out []string
	for name, n := range next.namespaces {
		if o, ok := old.namespaces[name]; !ok || o.Config.GetVersion() != n.Config.GetVersion() {
			out = append(out, name)
		}
	}
	for name := range old.namespaces {
		if _, ok := next.namespaces[name]; !ok {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// checkHosts makes the host → upstream mapping unambiguous: a name listed
// in one upstream's hosts may not select another upstream too. Two
// upstreams may share a URL host (the same registry with other
// credentials); image rewriting then picks the first by prefix.
func checkHosts(ups []*selfhostv1.Upstream) error {
	urlHost := map[string]string{}
	for _, u := range ups {
		if h := hostOf(u.GetUrl()); h != "" {
			if _, ok := urlHost[h]; !ok {
				urlHost[h] = u.GetPrefix()
			}
		}
	}
	listed := map[string]string{}
	for i, u := range ups {
		for j, h := range u.GetHosts() {
			h = strings.ToLower(h)
			if other, ok := listed[h]; ok && other != u.GetPrefix() {
				return fmt.Errorf("%w: upstreams[%d].hosts[%d]: %q already selects upstream %q", configspec.ErrInvalid, i, j, h, other)
			}
			if other, ok := urlHost[h]; ok && other != u.GetPrefix() {
				return fmt.Errorf("%w: upstreams[%d].hosts[%d]: %q is the URL host of upstream %q", configspec.ErrInvalid, i, j, h, other)
			}
			listed[h] = u.GetPrefix()
		}
	}
	return nil
}

// marshal is the deterministic encoding versions are computed over. It
// fails only on invalid UTF-8 in a string field, which the gRPC and JSON
// decoders already refuse; the error still reaches the caller rather than
// a panic.
func marshal(m proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%w: encode %T: %w", configspec.ErrInvalid, m, err)
	}
	return b, nil
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Host)
}

// RewriteRules are the injector's rules for namespace ns with image
// references rewritten to edgeAddress: the admin API's Resolve and the
// admission webhook build them here, so both always agree.
func (s *Set) RewriteRules(ns *Namespace, edgeAddress string) rewrite.Rules {
	rules := rewrite.Rules{EdgeAddress: edgeAddress, AllowedPrefixes: ns.Config.GetPolicy().GetAllowedPrefixes()}
	for _, u := range s.Upstreams {
		rules.Upstreams = append(rules.Upstreams, rewrite.Upstream{Prefix: u.GetPrefix(), URL: u.GetUrl(), Hosts: u.GetHosts()})
	}
	return rules
}
