package route

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
)

// Parse maps a request path (decoded, as in url.URL.Path) and query onto a
// Route. Percent-encoded traversal is caught because the decoded path is
// checked against the repository grammar, which has no "." segments.
func (t *Table) Parse(path string, query url.Values) (Route, error) {
	if path == "/v2" || path == "/v2/" {
		return Route{Kind: KindBase}, nil
	}
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return Route{}, ErrNotRegistryPath
	}
	name, kind, ref, err := splitEndpoint(rest)
	if err != nil {
		return Route{}, err
	}
	if !oci.ValidRepository(name) {
		return Route{}, fmt.Errorf("%w: %q", ErrNameInvalid, clip(name))
	}
	rt := Route{Kind: kind}
	rt.Prefix, rt.Repository, err = t.resolveName(name, query.Get("ns"))
	if err != nil {
		return Route{}, err
	}
	switch kind {
	case KindBlob:
		d, err := oci.ParseDigest(ref)
		if err != nil {
			return Route{}, fmt.Errorf("%w: %w", ErrDigestInvalid, err)
		}
		rt.Digest = d
	case KindManifest:
		if strings.Contains(ref, ":") {
			d, err := oci.ParseDigest(ref)
			if err != nil {
				return Route{}, fmt.Errorf("%w: %w", ErrDigestInvalid, err)
			}
			rt.Digest = d
		} else if !oci.ValidTag(ref) {
			return Route{}, fmt.Errorf("%w: %q", ErrTagInvalid, clip(ref))
		} else {
			rt.Tag = ref
		}
	}
	return rt, nil
}

// splitEndpoint splits "<name>/manifests/<ref>", "<name>/blobs/<digest>" and
// "<name>/tags/list". The endpoint is taken from the end of the path because
// a repository name may itself contain "manifests" or "blobs" segments.
func splitEndpoint(rest string) (name string, kind Kind, ref string, err error) {
	if n, ok := strings.CutSuffix(rest, "/tags/list"); ok {
		return n, KindTags, "", nil
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return "", 0, "", ErrNotRegistryPath
	}
	ref = rest[i+1:]
	j := strings.LastIndexByte(rest[:i], '/')
	if j < 0 {
		return "", 0, "", ErrNotRegistryPath
	}
	switch rest[j+1 : i] {
	case "manifests":
		kind = KindManifest
	case "blobs":
		kind = KindBlob
	default:
		return "", 0, "", ErrNotRegistryPath
	}
	if ref == "" {
		return "", 0, "", ErrNotRegistryPath
	}
	return rest[:j], kind, ref, nil
}

// resolveName picks the upstream and upstream repository for a request name.
//
//   - ?ns=<host> (containerd mirrors): the host selects the upstream and the
//     whole name is its repository.
//   - "<prefix>/<repository>" with a known prefix: that upstream.
//   - otherwise, a one- or two-segment name is a Docker Hub name (mirror
//     mode for daemon.json registry-mirrors). Docker Hub names never have
//     more than two segments, so a longer name with an unknown first
//     segment is an unknown prefix.
func (t *Table) resolveName(name, ns string) (prefix, repository string, err error) {
	if ns != "" {
		p, ok := t.byHost[strings.ToLower(ns)]
		if !ok {
			return "", "", fmt.Errorf("%w: no upstream for registry host %q", ErrNameUnknown, clip(ns))
		}
		return p, t.normalise(p, name), nil
	}
	first, repo, hasSlash := strings.Cut(name, "/")
	if hasSlash {
		if u, ok := t.byPrefix[first]; ok {
			return u.Prefix, t.normalise(u.Prefix, repo), nil
		}
	}
	if strings.Count(name, "/") > 1 {
		return "", "", fmt.Errorf("%w: prefix %q", ErrNameUnknown, clip(first))
	}
	if _, ok := t.byPrefix[DockerHubPrefix]; !ok {
		return "", "", fmt.Errorf("%w: no prefix in %q and no Docker Hub upstream", ErrNameUnknown, clip(name))
	}
	return DockerHubPrefix, t.normalise(DockerHubPrefix, name), nil
}

// normalise applies Docker Hub's "library/" rule for official images.
func (t *Table) normalise(prefix, repo string) string {
	if prefix == DockerHubPrefix && !strings.Contains(repo, "/") {
		return "library/" + repo
	}
	return repo
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
