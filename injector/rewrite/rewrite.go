// Package rewrite holds the injector's pure image-rewrite rules
// (injector/README.md): an image reference as written in a pod spec becomes
//
//	<edge address>/<prefix>/<repository>[:tag][@digest]
//
// where <prefix> is the upstream whose registry host the reference names.
// References are parsed with go-containerregistry's name package (never by
// splitting strings), tags and digests are kept exactly, and anything the
// rules cannot map — unknown registries, unparsable references, references
// already pointing at the edge, loopback registries — is left untouched with
// a reason. There is no Kubernetes client here: the control plane's Resolve
// call and the admission webhook share these functions.
package rewrite

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// ErrInvalid is wrapped by every error New returns; the message names the
// offending field.
var ErrInvalid = errors.New("invalid rewrite rules")

// Upstream is one registry the edge can pull from.
type Upstream struct {
	// Prefix is the first path segment at the edge ("dockerhub").
	Prefix string
	// URL is the upstream's base URL, scheme://host[:port].
	URL string
	// Hosts are further registry hosts that mean this upstream
	// ("docker.io" for https://registry-1.docker.io).
	Hosts []string
}

// Rules configure a Rewriter for one namespace.
type Rules struct {
	// EdgeAddress is the host:port clients of the namespace's edge pull
	// from ("127.0.0.1:30500"). Empty means there is no edge to rewrite to,
	// and every reference is left untouched.
	EdgeAddress string
	// Upstreams are the configured registries. When two claim the same
	// host, the first one wins.
	Upstreams []Upstream
	// AllowedPrefixes limits the upstreams the namespace may use; empty
	// allows all.
	AllowedPrefixes []string
}

// Reason says why a reference was left untouched.
type Reason string

// Reasons for leaving a reference untouched. The empty Reason means the
// reference was rewritten.
const (
	ReasonNone            Reason = ""
	ReasonUnparsable      Reason = "unparsable"
	ReasonAtEdge          Reason = "already-at-edge"
	ReasonLoopback        Reason = "loopback-registry"
	ReasonUnknownRegistry Reason = "unknown-registry"
	ReasonNotAllowed      Reason = "prefix-not-allowed"
	ReasonNoEdge          Reason = "no-edge-address"
	ReasonRewriteInvalid  Reason = "rewritten-invalid"
)

// Result is the outcome of rewriting one reference.
type Result struct {
	// Image is the input.
	Image string
	// Rewritten is the reference to write into the pod: the rewrite, or
	// Image itself when the reference is left untouched.
	Rewritten string
	// Normalized is the fully qualified input
	// ("docker.io/library/nginx:latest"); empty when it does not parse.
	Normalized string
	// Prefix of the selected upstream; empty when untouched.
	Prefix string
	// Repository at the upstream ("library/nginx").
	Repository string
	// Tag and Digest as written in the input (Tag is "latest" when neither
	// was written).
	Tag, Digest string
	// UpstreamURL is the manifest URL the edge fetches on a miss; empty
	// when untouched.
	UpstreamURL string
	// Reason is why the reference is untouched; ReasonNone when rewritten.
	Reason Reason
	// Detail explains Reason for people (admission warnings, grpcurl).
	Detail string
}

// Untouched tells whether the reference is left as it was.
func (r Result) Untouched() bool { return r.Reason != ReasonNone }

// Rewriter applies Rules. It is immutable and safe for concurrent use.
type Rewriter struct {
	edge    string // canonical host of the edge address, "" when none
	byHost  map[string]*upstream
	allowed map[string]bool // nil: all allowed
}

type upstream struct {
	prefix string
	base   string // URL without a trailing slash
}

// New validates rules and builds a Rewriter.
func New(rules Rules) (*Rewriter, error) {
	r := &Rewriter{byHost: map[string]*upstream{}}
	if rules.EdgeAddress != "" {
		if err := ValidateEdgeAddress(rules.EdgeAddress); err != nil {
			return nil, err
		}
		r.edge = canonicalHost(rules.EdgeAddress)
	}
	for i, u := range rules.Upstreams {
		pu, err := url.Parse(u.URL)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return nil, fmt.Errorf("%w: upstreams[%d].url: want http(s)://host[:port]", ErrInvalid, i)
		}
		up := &upstream{prefix: u.Prefix, base: strings.TrimSuffix(pu.Scheme+"://"+pu.Host, "/")}
		hosts := append([]string{pu.Host}, u.Hosts...)
		// https://ghcr.io:443 is named ghcr.io in image references.
		if p := pu.Port(); (p == "443" && pu.Scheme == "https") || (p == "80" && pu.Scheme == "http") {
			hosts = append(hosts, pu.Hostname())
		}
		for _, h := range hosts {
			k := canonicalHost(h)
			if _, taken := r.byHost[k]; !taken {
				r.byHost[k] = up
			}
		}
	}
	if len(rules.AllowedPrefixes) > 0 {
		r.allowed = map[string]bool{}
		for _, p := range rules.AllowedPrefixes {
			r.allowed[p] = true
		}
	}
	return r, nil
}

// ValidateEdgeAddress checks that addr can be the registry part of an image
// reference: host[:port], no scheme, no path.
func ValidateEdgeAddress(addr string) error {
	if addr == "" || len(addr) > 255 || strings.ContainsAny(addr, "/@ ") {
		return fmt.Errorf("%w: edge address %q: want host:port", ErrInvalid, clip(addr))
	}
	if _, err := name.NewRegistry(addr, name.StrictValidation); err != nil {
		return fmt.Errorf("%w: edge address %q: %w", ErrInvalid, clip(addr), err)
	}
	return nil
}

// Rewrite maps one image reference. It never fails: a reference the rules
// cannot map comes back untouched with a Reason.
func (r *Rewriter) Rewrite(image string) Result {
	res := Result{Image: image, Rewritten: image}
	ref, err := parse(image)
	if err != nil {
		return res.untouched(ReasonUnparsable, "not a valid image reference: %v", err)
	}
	res.Normalized, res.Repository, res.Tag, res.Digest = ref.normalized(), ref.repository, ref.tag, ref.digest
	host := canonicalHost(ref.registry)
	switch {
	case r.edge != "" && host == r.edge:
		return res.untouched(ReasonAtEdge, "already points at the namespace's edge %s", r.edge)
	case isLoopback(host):
		return res.untouched(ReasonLoopback, "registry %s is on the node's loopback; the node pulls it directly", ref.registry)
	}
	up, ok := r.byHost[host]
	if !ok {
		return res.untouched(ReasonUnknownRegistry, "registry %s is not a configured upstream (add it with PutUpstream: url or hosts)", ref.registry)
	}
	if r.allowed != nil && !r.allowed[up.prefix] {
		return res.untouched(ReasonNotAllowed, "upstream %q is not in the namespace's allowed prefixes", up.prefix)
	}
	if r.edge == "" {
		return res.untouched(ReasonNoEdge, "the namespace has no edge address yet; the pull goes to the origin")
	}
	out := r.edge + "/" + up.prefix + "/" + ref.repository + ref.suffix()
	// The prefix makes the name longer: re-parse so the pod never gets a
	// reference the node or the edge would refuse.
	if _, err := parse(out); err != nil {
		return res.untouched(ReasonRewriteInvalid, "the rewritten reference would be invalid: %v", err)
	}
	res.Rewritten, res.Prefix = out, up.prefix
	res.UpstreamURL = up.base + "/v2/" + ref.repository + "/manifests/" + ref.identifier()
	return res
}

func (r Result) untouched(reason Reason, format string, args ...any) Result {
	r.Reason, r.Detail = reason, fmt.Sprintf(format, args...)
	r.Rewritten, r.Prefix, r.UpstreamURL = r.Image, "", ""
	return r
}

// ref is a parsed reference. tag is "" when the input had none and a digest;
// "latest" when it had neither.
type ref struct {
	registry, repository, tag, digest string
}

// The repository grammar of the OCI Distribution Spec. go-containerregistry
// only checks characters when not strict ("a//b" passes), but the edge
// validates names against this, so a reference the edge would refuse is not
// a reference to rewrite.
var repositoryRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)

// dockerHubHosts are Docker Hub's names, where a one-segment repository is
// an official image under "library/". go-containerregistry applies that rule
// only to its default registry name.
var dockerHubHosts = map[string]bool{"index.docker.io": true, "registry-1.docker.io": true}

// ValidRepository tells whether s is a repository name of the OCI
// Distribution Spec ("library/nginx"), at most 255 characters.
func ValidRepository(s string) bool {
	return len(s) <= 255 && repositoryRE.MatchString(s)
}

func parse(image string) (ref, error) {
	if len(image) > 4096 {
		return ref{}, errors.New("longer than 4096 characters")
	}
	// No default tag: an absent tag must be told apart from ":latest".
	opts := []name.Option{name.WithDefaultTag("")}
	parsed, err := name.ParseReference(image, opts...)
	if err != nil {
		return ref{}, err
	}
	out := ref{registry: strings.ToLower(parsed.Context().RegistryStr()), repository: parsed.Context().RepositoryStr()}
	switch p := parsed.(type) {
	case name.Tag:
		out.tag = p.TagStr()
	case name.Digest:
		out.digest = p.DigestStr()
		// name.Digest drops a tag written before the digest; read it from the
		// part before "@", which ParseReference has just accepted.
		base, _, _ := strings.Cut(image, "@")
		if t, err := name.NewTag(base, opts...); err == nil {
			out.tag = t.TagStr()
		}
	}
	if out.tag == "" && out.digest == "" {
		out.tag = name.DefaultTag
	}
	if dockerHubHosts[canonicalHost(out.registry)] && !strings.Contains(out.repository, "/") {
		out.repository = "library/" + out.repository
	}
	if !ValidRepository(out.repository) {
		return ref{}, fmt.Errorf("repository %q does not match the OCI name grammar", clip(out.repository))
	}
	return out, nil
}

func (r ref) suffix() string {
	s := ""
	if r.tag != "" {
		s += ":" + r.tag
	}
	if r.digest != "" {
		s += "@" + r.digest
	}
	return s
}

// identifier is what the edge fetches on a miss: the digest when pinned.
func (r ref) identifier() string {
	if r.digest != "" {
		return r.digest
	}
	return r.tag
}

func (r ref) normalized() string {
	reg := r.registry
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + r.repository + r.suffix()
}

// canonicalHost lower-cases a registry host and folds Docker Hub's alias
// the way go-containerregistry does (docker.io → index.docker.io).
func canonicalHost(h string) string {
	h = strings.ToLower(h)
	if h == "docker.io" {
		return name.DefaultRegistry
	}
	return h
}

func isLoopback(host string) bool {
	u, err := url.Parse("//" + host)
	if err != nil {
		return false
	}
	h := u.Hostname()
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
