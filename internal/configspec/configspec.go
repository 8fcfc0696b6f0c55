// Package configspec is the shared meaning of the configuration messages in
// proto/selfhost/v1: the default upstreams (edge/README.md, "Path mapping") and
// the validation both sides apply — the control plane refuses at its admin
// API what an edge would NACK, and an edge NACKs what does not pass here.
package configspec

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// ErrInvalid is wrapped by every validation error; the message names the
// offending field.
var ErrInvalid = errors.New("invalid configuration")

// Reserved prefixes cannot name an upstream: "library" would capture Docker
// Hub mirror-mode paths (/v2/library/nginx/...), "v2" is the API root.
var reserved = map[string]bool{"library": true, "v2": true}

var prefixRE = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*$`)

// DefaultUpstreams are the four upstreams every edge knows unless the
// configuration overrides them.
func DefaultUpstreams() []*selfhostv1.Upstream {
	return []*selfhostv1.Upstream{
		{Prefix: "dockerhub", Url: "https://registry-1.docker.io", Hosts: []string{"docker.io", "index.docker.io"}},
		{Prefix: "ghcr", Url: "https://ghcr.io"},
		{Prefix: "quay", Aliases: []string{"quayio"}, Url: "https://quay.io"},
		{Prefix: "k8s", Url: "https://registry.k8s.io"},
	}
}

// Limits on sizes, so a hostile or mistaken config cannot blow up an edge.
const (
	MaxUpstreams   = 256
	MaxNameLength  = 63
	MaxURLLength   = 2048
	MaxSecretBytes = 4096
)

// ValidatePrefix checks one prefix or alias.
func ValidatePrefix(field, p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: %s: must not be empty", ErrInvalid, field)
	case len(p) > MaxNameLength:
		return fmt.Errorf("%w: %s: longer than %d characters", ErrInvalid, field, MaxNameLength)
	case !prefixRE.MatchString(p):
		return fmt.Errorf("%w: %s %q: must be one lower-case path component ([a-z0-9] with . _ - inside)", ErrInvalid, field, p)
	case reserved[p]:
		return fmt.Errorf("%w: %s %q: reserved", ErrInvalid, field, p)
	}
	return nil
}

// ValidateUpstream checks one upstream on its own.
func ValidateUpstream(field string, u *selfhostv1.Upstream) error {
	if u == nil {
		return fmt.Errorf("%w: %s: missing", ErrInvalid, field)
	}
	if err := ValidatePrefix(field+".prefix", u.GetPrefix()); err != nil {
		return err
	}
	for i, a := range u.GetAliases() {
		if err := ValidatePrefix(fmt.Sprintf("%s.aliases[%d]", field, i), a); err != nil {
			return err
		}
	}
	if len(u.GetUrl()) > MaxURLLength {
		return fmt.Errorf("%w: %s.url: longer than %d characters", ErrInvalid, field, MaxURLLength)
	}
	pu, err := url.Parse(u.GetUrl())
	switch {
	case err != nil:
		return fmt.Errorf("%w: %s.url: does not parse", ErrInvalid, field)
	case pu.Scheme != "http" && pu.Scheme != "https":
		return fmt.Errorf("%w: %s.url %q: scheme must be http or https", ErrInvalid, field, redact(pu))
	case pu.Host == "":
		return fmt.Errorf("%w: %s.url %q: needs a host", ErrInvalid, field, redact(pu))
	case !validHost(pu.Host):
		return fmt.Errorf("%w: %s.url: host %q is not a host name or IP address with an optional port", ErrInvalid, field, pu.Host)
	case pu.User != nil:
		return fmt.Errorf("%w: %s.url: must not carry credentials (use credentials)", ErrInvalid, field)
	case pu.Path != "" && pu.Path != "/", pu.RawQuery != "", pu.Fragment != "":
		return fmt.Errorf("%w: %s.url %q: must have no path, query or fragment", ErrInvalid, field, redact(pu))
	}
	for i, h := range u.GetHosts() {
		if h == "" || len(h) > MaxURLLength || strings.ContainsAny(h, "/ ?#@") {
			return fmt.Errorf("%w: %s.hosts[%d]: not a host[:port]", ErrInvalid, field, i)
		}
	}
	if c := u.GetCredentials(); c != nil {
		if (c.GetUsername() == "") != (c.GetPassword() == "") {
			return fmt.Errorf("%w: %s.credentials: username and password go together", ErrInvalid, field)
		}
		if len(c.GetUsername())+len(c.GetPassword()) > MaxSecretBytes {
			return fmt.Errorf("%w: %s.credentials: too long", ErrInvalid, field)
		}
	}
	if d := u.GetTagTtl(); d != nil && (d.CheckValid() != nil || d.AsDuration() < 0) {
		return fmt.Errorf("%w: %s.tag_ttl: must be a valid non-negative duration", ErrInvalid, field)
	}
	return nil
}

// ValidateUpstreams checks a list: each upstream, and no prefix, alias or
// host claimed twice.
func ValidateUpstreams(field string, ups []*selfhostv1.Upstream) error {
	if len(ups) > MaxUpstreams {
		return fmt.Errorf("%w: %s: more than %d upstreams", ErrInvalid, field, MaxUpstreams)
	}
	names := map[string]string{}
	for i, u := range ups {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := ValidateUpstream(f, u); err != nil {
			return err
		}
		for _, n := range append([]string{u.GetPrefix()}, u.GetAliases()...) {
			if other, dup := names[n]; dup {
				return fmt.Errorf("%w: %s: prefix %q already used by %s", ErrInvalid, f, n, other)
			}
			names[n] = f
		}
	}
	return nil
}

// ValidateEdgeConfig checks a whole snapshot as an edge receives it.
func ValidateEdgeConfig(c *selfhostv1.EdgeConfig) error {
	if c == nil {
		return fmt.Errorf("%w: config: missing", ErrInvalid)
	}
	if c.GetVersion() == "" {
		return fmt.Errorf("%w: version: must not be empty", ErrInvalid)
	}
	if c.GetNamespace() == "" || len(c.GetNamespace()) > MaxNameLength || !prefixRE.MatchString(c.GetNamespace()) {
		return fmt.Errorf("%w: namespace %q: not a Kubernetes namespace name", ErrInvalid, c.GetNamespace())
	}
	if err := ValidateUpstreams("upstreams", c.GetUpstreams()); err != nil {
		return err
	}
	known := map[string]bool{}
	for _, u := range c.GetUpstreams() {
		known[u.GetPrefix()] = true
	}
	for i, p := range c.GetPolicy().GetAllowedPrefixes() {
		if !known[p] {
			return fmt.Errorf("%w: policy.allowed_prefixes[%d]: %q is not a configured upstream", ErrInvalid, i, p)
		}
	}
	if len(c.GetPolicy().GetPullToken()) > MaxSecretBytes {
		return fmt.Errorf("%w: policy.pull_token: too long", ErrInvalid)
	}
	return ValidateStorage("storage", c.GetStorage())
}

// redact shows only scheme, host and path of a URL in an error: user info,
// queries and fragments may carry tokens.
func redact(u *url.URL) string {
	c := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	return c.String()
}

// validHost accepts what every edge's registry client accepts as a URI
// authority: a DNS name or IP literal (IPv6 in brackets) and an optional
// numeric port. Anything else (percent escapes, spaces, empty labels) would
// pass url.Parse here and be NACKed by every edge.
func validHost(hostport string) bool {
	host, port := hostport, ""
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(hostport, "[") {
		return false
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return false
		}
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if net.ParseIP(host) != nil {
		return true
	}
	return hostRE.MatchString(host)
}

var hostRE = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*$`)
