package controller

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// ErrUpstreamCredentials is wrapped by every ParseUpstreamCredentials
// error.
var ErrUpstreamCredentials = errors.New("invalid upstream credentials Secret")

// EventBadUpstreamCredentials is the reason of the Warning event on a
// malformed upstream-credentials Secret.
const EventBadUpstreamCredentials = "InvalidUpstreamCredentials"

// ParseUpstreamCredentials reads a tenant's Secret
// kubecontract.UpstreamCredentialsSecretName: type
// kubernetes.io/dockerconfigjson, the format of imagePullSecrets,
// {"auths":{"<host>":{"username":…,"password":…}}} or with "auth"
// (base64 of "user:password"). It returns the credentials by registry
// host (config.RegistryHost: "https://index.docker.io/v1/" is
// index.docker.io). Other fields of an entry (email, identitytoken) are
// ignored. The error wraps ErrUpstreamCredentials and names the field;
// it never contains a user name, password or auth value.
func ParseUpstreamCredentials(s *corev1.Secret) (map[string]config.Credentials, error) {
	fail := func(format string, args ...any) (map[string]config.Credentials, error) {
		return nil, fmt.Errorf("%w %s/%s: %s", ErrUpstreamCredentials, s.Namespace, s.Name, fmt.Sprintf(format, args...))
	}
	cfg, problem := readDockerConfig(s)
	if problem != "" {
		return fail("%s", problem)
	}
	if len(cfg.Auths) > configspec.MaxUpstreams {
		return fail("data[%s].auths has %d entries, at most %d", corev1.DockerConfigJsonKey, len(cfg.Auths), configspec.MaxUpstreams)
	}
	out := make(map[string]config.Credentials, len(cfg.Auths))
	from := map[string]string{}
	keys := make([]string, 0, len(cfg.Auths))
	for k := range cfg.Auths {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the first problem reported is always the same one
	for _, key := range keys {
		a := cfg.Auths[key]
		field := fmt.Sprintf("data[%s].auths[%q]", corev1.DockerConfigJsonKey, clip(key))
		host, ok := config.RegistryHost(key)
		if !ok {
			return fail("%s: not a registry host", field)
		}
		if other, dup := from[host]; dup {
			return fail("%s: names the same registry as auths[%q]", field, clip(other))
		}
		from[host] = key
		user, pass, err := entryCredentials(a)
		if err != nil {
			return fail("%s.%s", field, err)
		}
		out[host] = config.Credentials{Username: config.Secret(user), Password: config.Secret(pass)}
	}
	return out, nil
}

// entryCredentials takes the user name and password of one auths entry;
// the error names the field, never a value.
func entryCredentials(a dockerAuth) (user, pass string, err error) {
	user, pass = a.Username, a.Password
	if a.Auth != "" {
		b, err := base64.StdEncoding.DecodeString(a.Auth)
		if err != nil {
			return "", "", errors.New("auth: not base64")
		}
		u, p, ok := strings.Cut(string(b), ":")
		if !ok {
			return "", "", errors.New("auth: not base64 of user:password")
		}
		if (user != "" && user != u) || (pass != "" && pass != p) {
			return "", "", errors.New("auth: does not match username and password")
		}
		user, pass = u, p
	}
	switch {
	case user == "" || pass == "":
		return "", "", errors.New("username, password: both needed (or auth)")
	case len(user)+len(pass) > configspec.MaxSecretBytes:
		return "", "", fmt.Errorf("username, password: longer than %d bytes together", configspec.MaxSecretBytes)
	case !utf8.ValidString(user) || !utf8.ValidString(pass):
		return "", "", errors.New("username, password: not UTF-8")
	}
	return user, pass, nil
}

// clip shortens a tenant-chosen string for a message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// ownCredentials returns namespace ns's own upstream credentials from
// the cache; nil when it has no Secret or a malformed one (reported by
// checkUpstreamCredentials): the namespace then works with the
// operator's.
func (c *Controller) ownCredentials(ns string) map[string]config.Credentials {
	s, err := c.credSecrets.Secrets(ns).Get(kubecontract.UpstreamCredentialsSecretName)
	if err != nil {
		return nil
	}
	creds, err := ParseUpstreamCredentials(s)
	if err != nil {
		return nil
	}
	return creds
}

// checkUpstreamCredentials reports a malformed upstream-credentials
// Secret of the opted-in namespace ns, once per version of it: a log line
// and a Warning event on the Secret, both naming the field and never a
// value. The namespace keeps working without the tenant's credentials.
func (c *Controller) checkUpstreamCredentials(ns string) {
	s, err := c.credSecrets.Secrets(ns).Get(kubecontract.UpstreamCredentialsSecretName)
	var perr error
	if err == nil {
		_, perr = ParseUpstreamCredentials(s)
	} else if !apierrors.IsNotFound(err) {
		c.log.Warn("cannot read the upstream credentials Secret from the cache", "namespace", ns, "err", err)
		return
	}
	c.mu.Lock()
	if perr == nil {
		delete(c.badCredentials, ns)
		c.mu.Unlock()
		return
	}
	version := string(s.UID) + "/" + s.ResourceVersion
	reported := c.badCredentials[ns] == version
	c.badCredentials[ns] = version
	c.mu.Unlock()
	if reported {
		return
	}
	c.log.Warn("upstream credentials Secret ignored; the namespace's edges use the operator's credentials",
		"namespace", ns, "secret", kubecontract.UpstreamCredentialsSecretName, "err", perr)
	if c.recorder != nil {
		c.recorder.Event(s, corev1.EventTypeWarning, EventBadUpstreamCredentials,
			perr.Error()+"; ignored, the edges use the operator's credentials")
	}
}
