package config

import (
	"net/url"
	"strings"
)

// DockerHubHosts are the names Docker Hub goes by: image references say
// docker.io, Docker's own credential store says index.docker.io (as
// "https://index.docker.io/v1/"), and the registry API is served from
// registry-1.docker.io. Credentials for any of them are Docker Hub's.
var DockerHubHosts = []string{"docker.io", "index.docker.io", "registry-1.docker.io"}

// RegistryHost returns the registry host a docker config "auths" key
// names, lower-cased host[:port]: the key may carry a scheme and a path
// ("https://index.docker.io/v1/"), as Docker writes them. ok is false when
// no host can be read from it.
func RegistryHost(key string) (host string, ok bool) {
	k := key
	if _, rest, found := strings.Cut(k, "://"); found {
		k = rest
	}
	if i := strings.IndexByte(k, '/'); i >= 0 {
		k = k[:i]
	}
	k = strings.ToLower(k)
	if k == "" || strings.ContainsAny(k, "@?# \t\r\n\\") {
		return "", false
	}
	u, err := url.Parse("https://" + k)
	if err != nil || u.Host != k || u.Hostname() == "" {
		return "", false
	}
	return k, true
}
