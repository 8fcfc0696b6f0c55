package admin

import (
	"context"
	"regexp"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/rewrite"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// maxImageLength bounds a Resolve input; real references are far shorter.
const maxImageLength = 4096

// Resolve implements selfhostv1.AdminServiceServer with the injector's own
// rewrite rules, so what it shows is what the webhook will write.
func (s *Service) Resolve(ctx context.Context, req *selfhostv1.ResolveRequest) (*selfhostv1.ResolveResponse, error) {
	ns, err := s.namespace(req.GetNamespace())
	if err != nil {
		return nil, err
	}
	switch {
	case req.GetImage() == "":
		return nil, invalid("image: must not be empty")
	case len(req.GetImage()) > maxImageLength:
		return nil, invalid("image: longer than %d characters", maxImageLength)
	}
	// A connected edge knows its address best (its NodePort); the
	// configured one is the fallback.
	addr := s.edges.EdgeAddress(ns.Name)
	if addr == "" {
		addr = ns.EdgeAddress
	}
	rw, err := rewrite.New(s.config.Current().RewriteRules(ns, addr))
	if err != nil {
		// Every input was validated when it was committed or received.
		return nil, s.toStatus(ctx, "Resolve", err)
	}
	res := rw.Rewrite(req.GetImage())
	return &selfhostv1.ResolveResponse{
		Rewritten:       res.Rewritten,
		Normalized:      res.Normalized,
		Prefix:          res.Prefix,
		UpstreamUrl:     res.UpstreamURL,
		UntouchedReason: res.Detail,
	}, nil
}

// tagRE is the tag grammar of the OCI Distribution Spec.
var tagRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)

// InvalidateTag implements selfhostv1.AdminServiceServer. The prefix may
// be an alias; edges receive the canonical prefix.
func (s *Service) InvalidateTag(ctx context.Context, req *selfhostv1.InvalidateTagRequest) (*selfhostv1.InvalidateTagResponse, error) {
	if _, err := s.namespace(req.GetNamespace()); err != nil {
		return nil, err
	}
	t := req.GetTag()
	if t == nil {
		return nil, invalid("tag: missing")
	}
	prefix := ""
	for _, u := range s.config.Current().Upstreams {
		if u.GetPrefix() == t.GetPrefix() {
			prefix = u.GetPrefix()
		}
		for _, a := range u.GetAliases() {
			if a == t.GetPrefix() {
				prefix = u.GetPrefix()
			}
		}
	}
	switch {
	case prefix == "":
		return nil, invalid("tag.prefix: %q is not a configured upstream", t.GetPrefix())
	case !rewrite.ValidRepository(t.GetRepository()):
		return nil, invalid("tag.repository: %q is not a repository name (for Docker Hub official images write library/<name>)", t.GetRepository())
	case !tagRE.MatchString(t.GetTag()):
		return nil, invalid("tag.tag: %q is not a tag", t.GetTag())
	}
	n := s.edges.InvalidateTag(req.GetNamespace(), &selfhostv1.InvalidateTag{Prefix: prefix, Repository: t.GetRepository(), Tag: t.GetTag()})
	s.log.Info("tag invalidation sent", "namespace", req.GetNamespace(), "prefix", prefix, "repository", t.GetRepository(), "tag", t.GetTag(), "edges", n, "by", caller(ctx))
	return &selfhostv1.InvalidateTagResponse{EdgesNotified: uint32(n)}, nil
}
