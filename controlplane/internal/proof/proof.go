// Package proof decides whether a namespace may be served shared content.
// Blobs and manifests are stored once for the whole cluster, so the bytes one
// namespace fetched with its own credentials would otherwise be readable by
// every namespace that learns their digest. A namespace is granted a manifest
// only after an upstream request proved access to it in that repository: an
// anonymous HEAD (then the content is public and shared by every namespace,
// also while the upstream is down) or a HEAD with the namespace's own
// credentials (then it is the namespace's alone). A blob is granted when a
// manifest proven in that repository references it.
//
// The prover runs on the trusted side (the control plane, in the release
// namespace): edges run in their tenants' namespaces and cannot be trusted
// to check this themselves.
package proof

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
)

// Access is why a namespace may have an object.
type Access int

const (
	// Denied means there is no proof.
	Denied Access = iota
	// Public means proven anonymously.
	Public
	// Namespace means proven with the namespace's own credentials.
	Namespace
)

func (a Access) String() string {
	switch a {
	case Public:
		return "public"
	case Namespace:
		return "namespace"
	}
	return "denied"
}

// Errors the broker maps to gRPC statuses.
var (
	// ErrNoProof: the upstream did not confirm access (or the blob is not in
	// any proven manifest of the repository).
	ErrNoProof = errors.New("no proof of access")
	// ErrUnknownUpstream: the prefix is not an upstream the namespace may use.
	ErrUnknownUpstream = errors.New("upstream not allowed for this namespace")
	// ErrUnavailable: the upstream could not be asked and no proof is known.
	ErrUnavailable = errors.New("upstream unavailable and no proof known")
)

// Checker asks an upstream whether a manifest exists, the way the namespace
// would be allowed to fetch it.
type Checker interface {
	// HeadManifest checks repository@d at prefix's upstream, anonymously or
	// with namespace's credentials. hasCreds is false when the namespace has
	// no credentials of its own for prefix (then nothing is asked).
	HeadManifest(ctx context.Context, namespace, prefix, repository string, d oci.Digest, anonymous bool) (hasCreds bool, err error)
	// Allowed reports whether namespace may use prefix at all.
	Allowed(namespace, prefix string) bool
}

// Options tune a Prover.
type Options struct {
	// TTL is how long a proof is trusted before it is asked again (default
	// 10 minutes). A revoked credential stops serving after it.
	TTL time.Duration
	// NegativeTTL is how long a failed proof is remembered, so a client
	// probing digests cannot make the control plane hammer the upstream
	// (default 30 s).
	NegativeTTL time.Duration
	Logger      *slog.Logger
	Now         func() time.Time
}

// Prover checks and remembers proofs. Public proofs are also written to the
// store (under "proofs/public/"), so they survive restarts and are shared
// by every replica; namespace proofs live in memory only.
type Prover struct {
	check  Checker
	store  blob.Store
	opts   Options
	log    *slog.Logger
	flight singleflight.Group
	refs   *refCache

	mu sync.Mutex
	// proofs by scope, so a blob check looks only at its repository.
	proofs map[scopeKey]map[subjectDigest]entry
	count  int
	// loaded marks scopes whose persisted public proofs were read.
	loaded map[scopeKey]time.Time
}

type scopeKey struct{ prefix, repository string }

type proofKey struct {
	subject string // "" = public, else the namespace
	scope   scopeKey
	digest  oci.Digest
}

type subjectDigest struct {
	subject string
	digest  oci.Digest
}

// maxProofs bounds the memory of remembered proofs; beyond it the oldest
// negative and long-stale entries are dropped.
const maxProofs = 200_000

type entry struct {
	ok bool
	at time.Time
}

// New returns a Prover.
func New(check Checker, store blob.Store, opts Options) *Prover {
	if opts.TTL <= 0 {
		opts.TTL = 10 * time.Minute
	}
	if opts.NegativeTTL <= 0 {
		opts.NegativeTTL = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Prover{check: check, store: store, opts: opts, log: log, refs: newRefCache(store, 4096),
		proofs: make(map[scopeKey]map[subjectDigest]entry), loaded: make(map[scopeKey]time.Time)}
}

// Manifest decides whether namespace may have the manifest d in
// prefix/repository.
func (p *Prover) Manifest(ctx context.Context, namespace, prefix, repository string, d oci.Digest) (Access, error) {
	if !p.check.Allowed(namespace, prefix) {
		return Denied, fmt.Errorf("%w: %q", ErrUnknownUpstream, prefix)
	}
	sc := scopeKey{prefix, repository}
	p.loadPublic(ctx, sc)
	now := p.opts.Now()
	pub, pubOK := p.get(proofKey{"", sc, d})
	own, ownOK := p.get(proofKey{namespace, sc, d})
	switch {
	case pubOK && pub.ok && now.Sub(pub.at) < p.opts.TTL:
		return Public, nil
	case ownOK && own.ok && now.Sub(own.at) < p.opts.TTL:
		return Namespace, nil
	case ownOK && !own.ok && now.Sub(own.at) < p.opts.NegativeTTL:
		return Denied, fmt.Errorf("%w: manifest %s in %s/%s", ErrNoProof, d, prefix, repository)
	}
	// A child of a proven index is proven with it: a multi-arch pull asks
	// for the index by tag and then for its platform's manifest by digest.
	if a := p.viaIndex(ctx, namespace, sc, d); a != Denied {
		return a, nil
	}
	v, err, _ := p.flight.Do(namespace+"\x00"+prefix+"\x00"+repository+"\x00"+d.String(), func() (any, error) {
		return p.ask(ctx, namespace, sc, d)
	})
	if err != nil {
		// The upstream could not be asked: what was proven before still
		// holds. Public content stays shared during outages; a namespace
		// keeps what it proved itself (an unreachable upstream is not a
		// revoked credential).
		if errors.Is(err, ErrUnavailable) {
			if pubOK && pub.ok {
				return Public, nil
			}
			if ownOK && own.ok {
				return Namespace, nil
			}
		}
		return Denied, err
	}
	return v.(Access), nil
}

// ask asks the upstream: anonymously first, then with the namespace's
// credentials.
func (p *Prover) ask(ctx context.Context, namespace string, sc scopeKey, d oci.Digest) (Access, error) {
	_, err := p.check.HeadManifest(ctx, namespace, sc.prefix, sc.repository, d, true)
	if err == nil {
		p.put(proofKey{"", sc, d}, true)
		p.persistPublic(ctx, sc, d)
		return Public, nil
	}
	if upstream.IsUnavailable(err) {
		return Denied, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	anonErr := err
	// The repository is no longer public (or the manifest is gone): forget
	// any public proof so its blobs stop being shared.
	if _, had := p.get(proofKey{"", sc, d}); had {
		p.put(proofKey{"", sc, d}, false)
		if err := p.store.Delete(ctx, publicKey(sc, d)); err != nil {
			p.log.Warn("cannot delete a withdrawn public proof", "prefix", sc.prefix, "repository", sc.repository, "digest", d.String(), "err", err)
		}
	}
	hasCreds, err := p.check.HeadManifest(ctx, namespace, sc.prefix, sc.repository, d, false)
	if hasCreds && err == nil {
		p.put(proofKey{namespace, sc, d}, true)
		return Namespace, nil
	}
	if hasCreds && upstream.IsUnavailable(err) {
		return Denied, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if !hasCreds {
		err = anonErr
	}
	p.put(proofKey{namespace, sc, d}, false)
	p.log.Info("no proof of access", "namespace", namespace, "prefix", sc.prefix, "repository", sc.repository,
		"digest", d.String(), "with_credentials", hasCreds, "err", err)
	return Denied, fmt.Errorf("%w: manifest %s in %s/%s: %w", ErrNoProof, d, sc.prefix, sc.repository, err)
}

// Blob decides whether namespace may have the blob d in prefix/repository:
// a proven manifest of that repository (or a child of a proven index) must
// reference it. Blobs are never asked upstream: an edge always asks for the
// manifest first.
func (p *Prover) Blob(ctx context.Context, namespace, prefix, repository string, d oci.Digest) (Access, error) {
	if !p.check.Allowed(namespace, prefix) {
		return Denied, fmt.Errorf("%w: %q", ErrUnknownUpstream, prefix)
	}
	sc := scopeKey{prefix, repository}
	p.loadPublic(ctx, sc)
	best := Denied
	for _, pm := range p.proven(namespace, sc) {
		r, err := p.refs.get(ctx, pm.digest)
		if err != nil {
			continue // not stored (yet): it references nothing we can see
		}
		if r.blobs[d] {
			best = max(best, pm.access)
			if best == Public {
				return Public, nil
			}
			continue
		}
		for child := range r.manifests {
			cr, err := p.refs.get(ctx, child)
			if err == nil && cr.blobs[d] {
				best = max(best, pm.access)
			}
		}
		if best == Public {
			return Public, nil
		}
	}
	if best != Denied {
		return best, nil
	}
	return Denied, fmt.Errorf("%w: blob %s is in no proven manifest of %s/%s", ErrNoProof, d, prefix, repository)
}

type provenManifest struct {
	digest oci.Digest
	access Access
}

// proven lists the manifests of sc the namespace may use. Stale proofs count
// here: a blob of a manifest proven an hour ago is the same blob, and the
// manifest itself is rechecked when it is asked for.
func (p *Prover) proven(namespace string, sc scopeKey) []provenManifest {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []provenManifest
	for k, e := range p.proofs[sc] {
		if !e.ok {
			continue
		}
		switch k.subject {
		case "":
			out = append(out, provenManifest{k.digest, Public})
		case namespace:
			out = append(out, provenManifest{k.digest, Namespace})
		}
	}
	return out
}

// viaIndex grants d when a freshly proven index of sc references it.
func (p *Prover) viaIndex(ctx context.Context, namespace string, sc scopeKey, d oci.Digest) Access {
	now := p.opts.Now()
	best := Denied
	for _, pm := range p.proven(namespace, sc) {
		p.mu.Lock()
		subject := ""
		if pm.access == Namespace {
			subject = namespace
		}
		e := p.proofs[sc][subjectDigest{subject, pm.digest}]
		p.mu.Unlock()
		if now.Sub(e.at) >= p.opts.TTL {
			continue
		}
		r, err := p.refs.get(ctx, pm.digest)
		if err == nil && r.manifests[d] {
			best = max(best, pm.access)
		}
	}
	return best
}

func (p *Prover) get(k proofKey) (entry, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.proofs[k.scope][subjectDigest{k.subject, k.digest}]
	return e, ok
}

func (p *Prover) put(k proofKey, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.putLocked(k, entry{ok: ok, at: p.opts.Now()})
}

func (p *Prover) putLocked(k proofKey, e entry) {
	m := p.proofs[k.scope]
	if m == nil {
		m = make(map[subjectDigest]entry)
		p.proofs[k.scope] = m
	}
	sd := subjectDigest{k.subject, k.digest}
	if _, had := m[sd]; !had {
		p.count++
	}
	m[sd] = e
	if p.count > maxProofs {
		p.pruneLocked()
	}
}

// pruneLocked drops negative entries past their TTL and proofs stale for
// more than a day (a public one is reloaded from the store when needed).
func (p *Prover) pruneLocked() {
	now := p.opts.Now()
	for sc, m := range p.proofs {
		for sd, e := range m {
			age := now.Sub(e.at)
			if (!e.ok && age >= p.opts.NegativeTTL) || age >= 24*time.Hour {
				delete(m, sd)
				p.count--
			}
		}
		if len(m) == 0 {
			delete(p.proofs, sc)
			delete(p.loaded, sc)
		}
	}
}

// publicKey is where a public proof is persisted.
func publicKey(sc scopeKey, d oci.Digest) string {
	return "proofs/public/" + sc.prefix + "/" + sc.repository + "/_m/" + d.Algorithm + "/" + d.Hex
}

func (p *Prover) persistPublic(ctx context.Context, sc scopeKey, d oci.Digest) {
	stamp := []byte(p.opts.Now().UTC().Format(time.RFC3339))
	if err := p.store.Put(ctx, publicKey(sc, d), stamp, "text/plain"); err != nil {
		p.log.Warn("cannot persist a public proof; it holds in memory only", "prefix", sc.prefix,
			"repository", sc.repository, "digest", d.String(), "err", err)
	}
}

// loadPublic reads the persisted public proofs of sc once per TTL: another
// replica, or this one before a restart, may have proven them. They load
// as stale (their time is the stored one), so they serve blobs and outages
// but a manifest is asked upstream again when reachable.
func (p *Prover) loadPublic(ctx context.Context, sc scopeKey) {
	p.mu.Lock()
	at, ok := p.loaded[sc]
	if ok && p.opts.Now().Sub(at) < p.opts.TTL {
		p.mu.Unlock()
		return
	}
	p.loaded[sc] = p.opts.Now()
	p.mu.Unlock()
	prefix := "proofs/public/" + sc.prefix + "/" + sc.repository + "/_m/"
	err := p.store.List(ctx, prefix, func(key string, info blob.Info) error {
		rest := strings.TrimPrefix(key, prefix)
		alg, hex, ok := strings.Cut(rest, "/")
		if !ok {
			return nil
		}
		d, err := oci.ParseDigest(alg + ":" + hex)
		if err != nil {
			return nil
		}
		k := proofKey{"", sc, d}
		p.mu.Lock()
		if _, have := p.proofs[sc][subjectDigest{"", d}]; !have {
			// Stored time, capped at now: a future time must not make a
			// proof look fresh for longer.
			at := info.ModTime
			if now := p.opts.Now(); at.After(now) {
				at = now
			}
			p.putLocked(k, entry{ok: true, at: at})
		}
		p.mu.Unlock()
		return nil
	})
	if err != nil {
		p.log.Warn("cannot list persisted public proofs", "prefix", sc.prefix, "repository", sc.repository, "err", err)
	}
}
