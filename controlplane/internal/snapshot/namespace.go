package snapshot

import (
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// namespaceUpstreams are the upstreams namespace ns's edges receive: only
// those its policy allows (all when AllowedPrefixes is empty), so an edge
// never holds the credentials of an upstream its tenant may not use; and
// for each upstream whose registry host the namespace has credentials for
// (config.Namespace.RegistryCredentials), those instead of the operator's.
//
// Memory: the result shares the Set's upstream messages (read-only); only
// an upstream that gets the namespace's own credentials is cloned. A
// namespace with neither a policy nor credentials shares the whole slice.
func namespaceUpstreams(ups []*selfhostv1.Upstream, ns *config.Namespace) []*selfhostv1.Upstream {
	if len(ns.AllowedPrefixes) == 0 && len(ns.RegistryCredentials) == 0 {
		return ups
	}
	out := make([]*selfhostv1.Upstream, 0, len(ups))
	for _, u := range ups {
		if len(ns.AllowedPrefixes) > 0 && !slices.Contains(ns.AllowedPrefixes, u.GetPrefix()) {
			continue
		}
		if c, ok := credentialsFor(u, ns.RegistryCredentials); ok {
			u = proto.CloneOf(u) // shared: the namespace's credentials go on a copy
			u.Credentials = &selfhostv1.Credentials{Username: c.Username.Reveal(), Password: c.Password.Reveal()}
		}
		out = append(out, u)
	}
	return out
}

// credentialsFor picks the namespace's credentials for upstream u: those
// of u's URL host first, then of its host name without the scheme's
// default port, then of its mirror hosts in order; Docker Hub's names
// (config.DockerHubHosts) all stand for one another.
func credentialsFor(u *selfhostv1.Upstream, creds map[string]config.Credentials) (config.Credentials, bool) {
	if len(creds) == 0 {
		return config.Credentials{}, false
	}
	for _, h := range UpstreamHosts(u) {
		if c, ok := creds[h]; ok {
			// Tenants write these: ones an edge would refuse must not make
			// the whole Set invalid (the cluster view checks them first;
			// this is the last line).
			return c, UsableCredentials(c)
		}
	}
	return config.Credentials{}, false
}

// UsableCredentials reports whether c passes the edges' checks of upstream
// credentials: user name and password both set, valid UTF-8, and together
// at most configspec.MaxSecretBytes.
func UsableCredentials(c config.Credentials) bool {
	u, p := c.Username.Reveal(), c.Password.Reveal()
	return u != "" && p != "" && len(u)+len(p) <= configspec.MaxSecretBytes && utf8.ValidString(u) && utf8.ValidString(p)
}

// UpstreamHosts are the registry hosts that name upstream u, lower-cased,
// most specific first: its URL's host[:port], that host without the
// scheme's default port, its mirror hosts, and, when any of these is one
// of Docker Hub's names, the others.
func UpstreamHosts(u *selfhostv1.Upstream) []string {
	var out []string
	add := func(h string) {
		h = strings.ToLower(h)
		if h != "" && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	if pu, err := url.Parse(u.GetUrl()); err == nil {
		add(pu.Host)
		if p := pu.Port(); (p == "443" && pu.Scheme == "https") || (p == "80" && pu.Scheme == "http") {
			add(pu.Hostname())
		}
	}
	for _, h := range u.GetHosts() {
		add(h)
	}
	if slices.ContainsFunc(out, func(h string) bool { return slices.Contains(config.DockerHubHosts, h) }) {
		for _, h := range config.DockerHubHosts {
			add(h)
		}
	}
	return out
}
