package configfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"sigs.k8s.io/yaml"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/rewrite"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// fileConfig is the YAML file. Field names are the documented keys;
// decoding is strict, so a misspelt key is an error naming it.
type fileConfig struct {
	AdminTokens    []string                 `json:"adminTokens"`
	AdminTokenFile string                   `json:"adminTokenFile"`
	Upstreams      *[]upstreamSpec          `json:"upstreams"` // nil: the defaults
	Namespaces     map[string]namespaceSpec `json:"namespaces"`
	Clash          *clashSpec               `json:"clash"`
	Storage        *storageSpec             `json:"storage"`
}

type namespaceSpec struct {
	EdgeToken          string   `json:"edgeToken"`
	EdgeTokenFile      string   `json:"edgeTokenFile"`
	PullToken          string   `json:"pullToken"`
	PullTokenFile      string   `json:"pullTokenFile"`
	AllowedPrefixes    []string `json:"allowedPrefixes"`
	EdgeAddress        string   `json:"edgeAddress"`
	MaxConcurrentFills uint32   `json:"maxConcurrentFills"`
	// MaxUpstreamRequestsPerSecond and UpstreamBurst: 0 means
	// --namespace-max-upstream-rps / --namespace-upstream-burst.
	MaxUpstreamRequestsPerSecond uint32 `json:"maxUpstreamRequestsPerSecond"`
	UpstreamBurst                uint32 `json:"upstreamBurst"`
}

// upstreamSpec is an upstream in the YAML file and in the state file.
type upstreamSpec struct {
	Prefix      string           `json:"prefix"`
	URL         string           `json:"url"`
	Aliases     []string         `json:"aliases,omitempty"`
	Hosts       []string         `json:"hosts,omitempty"`
	Credentials *credentialsSpec `json:"credentials,omitempty"`
	TagTTL      string           `json:"tagTTL,omitempty"`
	Proxy       string           `json:"proxy,omitempty"`
}

type credentialsSpec struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// Token rules: long enough not to be guessed, and the RFC 6750 b64token
// alphabet so they travel in an Authorization header unchanged.
const minTokenLength = 16

var (
	tokenRE     = regexp.MustCompile(`^[A-Za-z0-9._~+/-]+=*$`)
	namespaceRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

// parse decodes and validates the YAML file; dir resolves relative token
// file paths; inCluster applies the in-cluster rules (see InCluster).
// Every bad value is reported, not just the first.
func parse(data []byte, dir string, inCluster bool) (*config.State, error) {
	var fc fileConfig
	if err := checkKeys(data, fc); err != nil {
		return nil, err
	}
	if err := yaml.UnmarshalStrict(data, &fc); err != nil {
		return nil, config.Invalidf("%s", decodeError(err))
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, config.Invalidf(format, args...))
	}
	st := &config.State{Namespaces: map[string]*config.Namespace{}}
	tokens := newTokenSet(bad)

	for i, t := range fc.AdminTokens {
		st.AdminTokens = append(st.AdminTokens, tokens.add(fmt.Sprintf("adminTokens[%d]", i), t))
	}
	if fc.AdminTokenFile != "" {
		lines, err := readTokenLines(resolve(dir, fc.AdminTokenFile))
		if err != nil {
			bad("adminTokenFile: %v", err)
		}
		for i, t := range lines {
			st.AdminTokens = append(st.AdminTokens, tokens.add(fmt.Sprintf("adminTokenFile line %d", i+1), t))
		}
	}
	if len(fc.AdminTokens) == 0 && fc.AdminTokenFile == "" && !inCluster {
		bad("adminTokens: at least one admin token is required (adminTokens or adminTokenFile)")
	}
	if inCluster && len(fc.Namespaces) > 0 {
		bad("namespaces: not allowed in-cluster: a namespace opts in with the label %s=%s, and its edge authenticates with its ServiceAccount token",
			kubecontract.OptInLabel, kubecontract.OptInValue)
		fc.Namespaces = nil
	}

	st.Clash = parseClash(fc.Clash, dir, bad)
	st.Storage = parseStorage(fc.Storage, dir, bad)

	if fc.Upstreams == nil {
		st.Upstreams = configspec.DefaultUpstreams()
	} else {
		ups, err := upstreamsFromSpecs("upstreams", *fc.Upstreams)
		if err != nil {
			errs = append(errs, err)
		}
		st.Upstreams = ups
	}

	for _, name := range slices.Sorted(maps.Keys(fc.Namespaces)) {
		spec := fc.Namespaces[name]
		field := "namespaces." + name
		if len(name) > 63 || !namespaceRE.MatchString(name) {
			bad("%s: not a Kubernetes namespace name (lower-case letters, digits and '-', at most 63)", field)
		}
		ns := &config.Namespace{
			AllowedPrefixes:    spec.AllowedPrefixes,
			EdgeAddress:        spec.EdgeAddress,
			MaxConcurrentFills: spec.MaxConcurrentFills,
			MaxUpstreamRPS:     spec.MaxUpstreamRequestsPerSecond,
			UpstreamBurst:      spec.UpstreamBurst,
		}
		edgeToken, err := inlineOrFile(spec.EdgeToken, spec.EdgeTokenFile, dir)
		switch {
		case err != nil:
			bad("%s.edgeToken: %v", field, err)
		case edgeToken == "":
			bad("%s.edgeToken: required (edgeToken or edgeTokenFile)", field)
		default:
			ns.EdgeToken = tokens.add(field+".edgeToken", edgeToken)
		}
		pullToken, err := inlineOrFile(spec.PullToken, spec.PullTokenFile, dir)
		switch {
		case err != nil:
			bad("%s.pullToken: %v", field, err)
		case len(pullToken) > configspec.MaxSecretBytes:
			bad("%s.pullToken: longer than %d bytes", field, configspec.MaxSecretBytes)
		}
		ns.PullToken = config.Secret(pullToken)
		if spec.EdgeAddress != "" {
			if err := rewrite.ValidateEdgeAddress(spec.EdgeAddress); err != nil {
				bad("%s.edgeAddress: %q: want host:port as written in image references", field, spec.EdgeAddress)
			}
		}
		for i, p := range spec.AllowedPrefixes {
			if err := configspec.ValidatePrefix(fmt.Sprintf("%s.allowedPrefixes[%d]", field, i), p); err != nil {
				errs = append(errs, config.Invalid(err))
			}
		}
		st.Namespaces[name] = ns
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return st, nil
}

// checkAllowedPrefixes reports namespace policies naming an upstream that
// is not configured (after the state file may have replaced the list).
func checkAllowedPrefixes(st *config.State, upstreamsFrom string) error {
	known := map[string]bool{}
	for _, u := range st.Upstreams {
		known[u.GetPrefix()] = true
	}
	var errs []error
	for _, name := range st.NamespaceNames() {
		for i, p := range st.Namespaces[name].AllowedPrefixes {
			if !known[p] {
				errs = append(errs, config.Invalidf("namespaces.%s.allowedPrefixes[%d]: %q is not an upstream prefix in %s", name, i, p, upstreamsFrom))
			}
		}
	}
	return errors.Join(errs...)
}

// upstreamsFromSpecs converts and validates a list of upstreams.
func upstreamsFromSpecs(field string, specs []upstreamSpec) ([]*selfhostv1.Upstream, error) {
	ups := make([]*selfhostv1.Upstream, 0, len(specs))
	for i, s := range specs {
		u := &selfhostv1.Upstream{Prefix: s.Prefix, Url: s.URL, Aliases: s.Aliases, Hosts: s.Hosts, Proxy: s.Proxy}
		if err := config.CheckUpstreamProxy(fmt.Sprintf("%s[%d].proxy", field, i), s.Proxy); err != nil {
			return nil, err
		}
		if c := s.Credentials; c != nil {
			u.Credentials = &selfhostv1.Credentials{Username: c.Username, Password: c.Password}
		}
		if s.TagTTL != "" {
			d, err := time.ParseDuration(s.TagTTL)
			if err != nil || d < 0 {
				return nil, config.Invalidf("%s[%d].tagTTL: %q is not a non-negative duration (e.g. 5m)", field, i, s.TagTTL)
			}
			u.TagTtl = durationpb.New(d)
		}
		ups = append(ups, u)
	}
	if err := configspec.ValidateUpstreams(field, ups); err != nil {
		return nil, config.Invalid(err)
	}
	return ups, nil
}

// specsFromUpstreams is the inverse of upstreamsFromSpecs, for the state
// file.
func specsFromUpstreams(ups []*selfhostv1.Upstream) []upstreamSpec {
	out := make([]upstreamSpec, 0, len(ups))
	for _, u := range ups {
		s := upstreamSpec{Prefix: u.GetPrefix(), URL: u.GetUrl(), Aliases: u.GetAliases(), Hosts: u.GetHosts(), Proxy: u.GetProxy()}
		if c := u.GetCredentials(); c != nil {
			s.Credentials = &credentialsSpec{Username: c.GetUsername(), Password: c.GetPassword()}
		}
		if u.GetTagTtl() != nil {
			s.TagTTL = u.GetTagTtl().AsDuration().String()
		}
		out = append(out, s)
	}
	return out
}

// tokenSet checks token syntax and that no token is used twice, naming the
// places, never the values.
type tokenSet struct {
	seen map[string]string
	bad  func(format string, args ...any)
}

func newTokenSet(bad func(string, ...any)) *tokenSet {
	return &tokenSet{seen: map[string]string{}, bad: bad}
}

func (t *tokenSet) add(field, token string) config.Secret {
	switch {
	case len(token) < minTokenLength:
		t.bad("%s: a token needs at least %d characters", field, minTokenLength)
	case len(token) > configspec.MaxSecretBytes:
		t.bad("%s: longer than %d bytes", field, configspec.MaxSecretBytes)
	case !tokenRE.MatchString(token):
		t.bad("%s: a token may only contain A-Z a-z 0-9 . _ ~ + / - (and trailing =)", field)
	}
	if other, dup := t.seen[token]; dup {
		t.bad("%s: same token as %s; every namespace and admin needs its own", field, other)
	} else {
		t.seen[token] = field
	}
	return config.Secret(token)
}

func inlineOrFile(inline, file, dir string) (string, error) {
	if inline != "" && file != "" {
		return "", errors.New("set the value or the file, not both")
	}
	if file == "" {
		return inline, nil
	}
	data, err := os.ReadFile(resolve(dir, file))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}

// readTokenLines reads one token per line; blank lines and # comments are
// skipped.
func readTokenLines(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out, nil
}

func resolve(dir, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}

// decodeError shortens the decoder's wrapping and drops the offending value
// from type errors: a token written as a number must not reach the log.
func decodeError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		kind, _, _ := strings.Cut(te.Value, " ")
		return fmt.Sprintf("%s: want %s, got %s", te.Field, te.Type, kind)
	}
	msg := err.Error()
	for _, p := range []string{"error unmarshaling JSON: ", "while decoding JSON: ", "json: ", "error converting YAML to JSON: "} {
		msg = strings.ReplaceAll(msg, p, "")
	}
	return msg
}
