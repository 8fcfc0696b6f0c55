// Package config is the control plane's model of its configuration — the
// upstreams, each namespace's policy and the standalone tokens — and the
// Source interface it is loaded from and saved to. Its subpackages are the
// one Source: configfile reads the operator's YAML file and keeps what the
// admin API changes in a state document, stored in a file standalone or, in
// a cluster, in a ConfigMap through configmapstate. The committed
// configuration built from it lives in package configstore.
package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// ErrInvalid is matched (errors.Is) by every error about a bad
// configuration value; the message names the field and never contains a
// secret.
var ErrInvalid = errors.New("invalid control-plane configuration")

// Invalid marks err as an ErrInvalid without adding to its message ("field:
// problem"). configspec's own prefix is dropped, so every problem reads
// the same way.
func Invalid(err error) error { return invalidError{err} }

// Invalidf is Invalid(fmt.Errorf(format, args...)).
func Invalidf(format string, args ...any) error { return Invalid(fmt.Errorf(format, args...)) }

type invalidError struct{ err error }

func (e invalidError) Error() string {
	return strings.TrimPrefix(e.err.Error(), configspec.ErrInvalid.Error()+": ")
}
func (e invalidError) Unwrap() error        { return e.err }
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

// Problems splits an error that joins several problems (errors.Join, as
// configuration loaders return them) into its parts, so each can be logged
// on its own line; any other error is returned alone.
func Problems(err error) []error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			return j.Unwrap()
		}
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

// Source loads the configuration and persists runtime changes.
type Source interface {
	// Load returns the configuration to start from.
	Load(ctx context.Context) (*State, error)
	// Save persists st so that a later Load returns its runtime-mutable
	// parts (the upstreams). It is atomic: after a crash Load returns
	// either the old or the new state, never a mix.
	Save(ctx context.Context, st *State) error
}

// State is the whole configuration. Treat a State handed out by another
// package as read-only; Clone it to change it.
type State struct {
	// AdminTokens are the bearer tokens of the admin API (standalone).
	AdminTokens []Secret
	// Upstreams are the registries edges pull from.
	Upstreams []*selfhostv1.Upstream
	// Namespaces by name.
	Namespaces map[string]*Namespace
	// Clash is the Clash subscription's configuration and the operator's
	// runtime choice of mode and node.
	Clash Clash
	// Proxy is the node pool and the current selection, computed at runtime
	// by package clash; nil until the subscription was first fetched (and
	// always when Clash is disabled). It is never persisted.
	Proxy *ProxyPool
	// Storage is the shared S3 storage the control plane brokers for every
	// edge started with --storage=control-plane; nil when none is
	// configured. It comes
	// from the operator's YAML file only and is never persisted.
	Storage *Storage
}

// Storage is the shared S3 bucket edges cache in, and the credentials they
// reach it with (empty: the edges' own AWS credential chain).
type Storage struct {
	Bucket          string
	Prefix          string
	Region          string
	Endpoint        string
	PathStyle       bool
	AccessKeyID     Secret
	SecretAccessKey Secret
}

// EdgeProto is the StorageConfig edges receive: brokered, no credentials
// (an edge's keys would be its tenant's keys).
func (s *Storage) EdgeProto() *selfhostv1.StorageConfig {
	if s == nil {
		return nil
	}
	return &selfhostv1.StorageConfig{Brokered: &selfhostv1.BrokeredStorage{}}
}

// Proto is the bucket with its credentials, as the control plane itself
// opens it (and validates it).
func (s *Storage) Proto() *selfhostv1.StorageConfig {
	if s == nil {
		return nil
	}
	return &selfhostv1.StorageConfig{S3: &selfhostv1.S3Storage{
		Bucket: s.Bucket, Prefix: s.Prefix, Region: s.Region, Endpoint: s.Endpoint, PathStyle: s.PathStyle,
		AccessKeyId: s.AccessKeyID.Reveal(), SecretAccessKey: s.SecretAccessKey.Reveal(),
	}}
}

// Namespace is one namespace's policy and edge.
type Namespace struct {
	// EdgeToken is the bearer token of the namespace's edge (standalone).
	EdgeToken Secret
	// PullToken, when set, is required from every client of the edge.
	PullToken Secret
	// AllowedPrefixes limits the upstreams the namespace may use; empty
	// allows all.
	AllowedPrefixes []string
	// EdgeAddress is what image references are rewritten to when no
	// connected edge reports its own address.
	EdgeAddress string
	// MaxConcurrentFills bounds the namespace's parallel upstream
	// transfers; zero means the edge's default.
	MaxConcurrentFills uint32
	// MaxUpstreamRPS and UpstreamBurst are the token bucket of the
	// namespace's upstream requests; zero means the control plane's
	// default (snapshot.Builder), and when that is zero too, the edge's.
	MaxUpstreamRPS uint32
	UpstreamBurst  uint32
	// RegistryCredentials are the namespace's own credentials by registry
	// host (RegistryHost form), from its tenant's Secret in-cluster. They
	// replace the operator's credentials of the upstreams those hosts
	// select, in this namespace's configuration only.
	RegistryCredentials map[string]Credentials
}

// Credentials are a user name and password (or token) for a registry.
type Credentials struct {
	Username Secret
	Password Secret
}

// Clone returns a deep copy of s.
func (s *State) Clone() *State {
	out := &State{
		AdminTokens: slices.Clone(s.AdminTokens),
		Upstreams:   CloneUpstreams(s.Upstreams),
		Namespaces:  make(map[string]*Namespace, len(s.Namespaces)),
		Clash:       s.Clash,
		Proxy:       s.Proxy, // immutable, shared
	}
	if s.Storage != nil {
		st := *s.Storage
		out.Storage = &st
	}
	for name, ns := range s.Namespaces {
		c := *ns
		c.AllowedPrefixes = slices.Clone(ns.AllowedPrefixes)
		c.RegistryCredentials = maps.Clone(ns.RegistryCredentials)
		out.Namespaces[name] = &c
	}
	return out
}

// NamespaceNames returns the namespace names, sorted.
func (s *State) NamespaceNames() []string {
	return slices.Sorted(maps.Keys(s.Namespaces))
}

// CloneUpstreams deep-copies a list of upstreams.
func CloneUpstreams(ups []*selfhostv1.Upstream) []*selfhostv1.Upstream {
	out := make([]*selfhostv1.Upstream, len(ups))
	for i, u := range ups {
		out[i] = proto.CloneOf(u)
	}
	return out
}

// Secret is a string that never prints itself: fmt, slog and JSON show
// "REDACTED", so a State can be logged or wrapped into an error by mistake
// without leaking tokens.
type Secret string

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "REDACTED"
}

// GoString implements fmt.GoStringer (%#v).
func (s Secret) GoString() string { return s.String() }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText implements encoding.TextMarshaler, so encoding/json redacts
// it too. Nothing persists secrets through this path.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
