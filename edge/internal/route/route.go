// Package route maps registry request paths onto upstreams (edge/README.md,
// "Path mapping"): /v2/<prefix>/<repository>/... selects the upstream
// registered under <prefix>, a name without a known prefix is Docker Hub
// (mirror mode), and containerd's ?ns=<host> query selects the upstream by
// host.
//
// Everything here is a pure function of the path, the query and the Table,
// so the parsers can be fuzzed without a server.
package route

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
)

// Sentinel errors, each translated to one OCI error code at the HTTP boundary.
var (
	ErrNotRegistryPath = errors.New("not a registry API path")
	ErrNameInvalid     = errors.New("invalid repository name")
	ErrNameUnknown     = errors.New("unknown upstream")
	ErrTagInvalid      = errors.New("invalid tag")
	ErrDigestInvalid   = errors.New("invalid digest")
)

// Kind is the kind of registry endpoint a request addresses.
type Kind int

// Endpoint kinds of the pull side of the Distribution Spec.
const (
	KindBase Kind = iota
	KindManifest
	KindBlob
	KindTags
)

func (k Kind) String() string {
	switch k {
	case KindManifest:
		return "manifest"
	case KindBlob:
		return "blob"
	case KindTags:
		return "tags"
	}
	return "base"
}

// DockerHubPrefix is the prefix of Docker Hub, which gets two special rules:
// it is the default for names without a prefix, and its one-segment names
// are official images under "library/".
const DockerHubPrefix = "dockerhub"

// Upstream is one entry of the Table.
type Upstream struct {
	// Prefix is the canonical first path segment, e.g. "quay".
	Prefix string
	// Aliases are further prefixes that mean the same upstream ("quayio").
	Aliases []string
	// URL is the upstream's base URL (scheme and host).
	URL *url.URL
	// Hosts are the registry host names that ?ns= may carry for this
	// upstream, in addition to URL's host (docker.io for Docker Hub).
	Hosts []string
}

// Route is a parsed request.
type Route struct {
	Kind Kind
	// Prefix is the canonical prefix of the selected upstream.
	Prefix string
	// Repository is the repository name at the upstream ("library/nginx").
	Repository string
	// Tag is set for a manifest request by tag.
	Tag string
	// Digest is set for blob requests and manifest requests by digest.
	Digest oci.Digest
}

// Reference returns the tag or digest the route addresses.
func (r Route) Reference() string {
	if r.Tag != "" {
		return r.Tag
	}
	return r.Digest.String()
}

// Table is an immutable set of upstreams. Build a new one to change it.
type Table struct {
	byPrefix map[string]Upstream
	byHost   map[string]string
}

// Defaults are the four default upstreams: dockerhub, ghcr, quay (alias
// quayio) and k8s.
func Defaults() []Upstream {
	mustURL := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			panic(err)
		}
		return u
	}
	return []Upstream{
		{Prefix: DockerHubPrefix, URL: mustURL("https://registry-1.docker.io"), Hosts: []string{"docker.io", "index.docker.io"}},
		{Prefix: "ghcr", URL: mustURL("https://ghcr.io")},
		{Prefix: "quay", Aliases: []string{"quayio"}, URL: mustURL("https://quay.io")},
		{Prefix: "k8s", URL: mustURL("https://registry.k8s.io")},
	}
}

// NewTable validates ups and indexes them by prefix, alias and host. A later
// entry with the same prefix replaces an earlier one, so user flags can
// override defaults.
func NewTable(ups []Upstream) (*Table, error) {
	t := &Table{byPrefix: map[string]Upstream{}, byHost: map[string]string{}}
	merged := map[string]Upstream{}
	var order []string
	for _, u := range ups {
		if err := ValidatePrefix(u.Prefix); err != nil {
			return nil, err
		}
		if u.URL == nil || (u.URL.Scheme != "http" && u.URL.Scheme != "https") || u.URL.Host == "" {
			return nil, fmt.Errorf("upstream %q: URL must be http:// or https:// with a host", u.Prefix)
		}
		if u.URL.User != nil {
			return nil, fmt.Errorf("upstream %q: URL must not carry credentials; configure them separately", u.Prefix)
		}
		if _, seen := merged[u.Prefix]; !seen {
			order = append(order, u.Prefix)
		}
		merged[u.Prefix] = u
	}
	for _, p := range order {
		u := merged[p]
		for _, name := range append([]string{u.Prefix}, u.Aliases...) {
			if err := ValidatePrefix(name); err != nil {
				return nil, err
			}
			if other, dup := t.byPrefix[name]; dup && other.Prefix != u.Prefix {
				return nil, fmt.Errorf("prefix %q is used by upstreams %q and %q", name, other.Prefix, u.Prefix)
			}
			t.byPrefix[name] = u
		}
		for _, h := range append([]string{u.URL.Host}, u.Hosts...) {
			t.byHost[strings.ToLower(h)] = u.Prefix
		}
	}
	return t, nil
}

// ValidatePrefix checks that p can be a path prefix: one lower-case
// repository path component.
func ValidatePrefix(p string) error {
	if p == "" || strings.Contains(p, "/") || !oci.ValidRepository(p) {
		return fmt.Errorf("upstream prefix %q must be one lower-case path component", p)
	}
	return nil
}

// Lookup returns the upstream registered under prefix or one of its aliases.
func (t *Table) Lookup(prefix string) (Upstream, bool) {
	u, ok := t.byPrefix[prefix]
	return u, ok
}

// Upstreams returns the canonical entries sorted by prefix.
func (t *Table) Upstreams() []Upstream {
	seen := map[string]bool{}
	var out []Upstream
	for _, u := range t.byPrefix {
		if !seen[u.Prefix] {
			seen[u.Prefix] = true
			out = append(out, u)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Prefix < out[j].Prefix })
	return out
}
