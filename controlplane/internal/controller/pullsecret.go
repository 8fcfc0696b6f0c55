package controller

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// tokenBytes is the entropy of a pull token.
const tokenBytes = 32

// ErrPullSecret is wrapped by every ParsePullSecret error.
var ErrPullSecret = errors.New("invalid pull secret")

// dockerConfig is the .dockerconfigjson document.
type dockerConfig struct {
	Auths map[string]dockerAuth `json:"auths"`
}

type dockerAuth struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Auth     string `json:"auth"`
}

// readDockerConfig decodes the document of a kubernetes.io/dockerconfigjson
// Secret. problem is "" on success, else it names the field at fault and
// never quotes the content.
func readDockerConfig(s *corev1.Secret) (cfg dockerConfig, problem string) {
	if s.Type != corev1.SecretTypeDockerConfigJson {
		return cfg, fmt.Sprintf("type %q, want %q", s.Type, corev1.SecretTypeDockerConfigJson)
	}
	raw, ok := s.Data[corev1.DockerConfigJsonKey]
	if !ok {
		return cfg, fmt.Sprintf("data[%s] is missing", corev1.DockerConfigJsonKey)
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		// The JSON error may quote the content: leave it out.
		return cfg, fmt.Sprintf("data[%s] is not a JSON docker config", corev1.DockerConfigJsonKey)
	}
	return cfg, ""
}

// NewPullToken returns a fresh pull token: 32 random bytes, base64url
// without padding.
func NewPullToken() (string, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("pull token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// EdgeHost is the registry host pods pull through: 127.0.0.1:<nodePort>
// (the literal loopback address, never "localhost", which some nodes
// resolve to ::1 first; docs/kubernetes.md, "Exposure and its limits").
func EdgeHost(nodePort int32) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(nodePort)))
}

// NodePortOf returns the port of a host made by EdgeHost; ok is false for
// any other host.
func NodePortOf(host string) (int32, bool) {
	h, p, err := net.SplitHostPort(host)
	if err != nil || h != "127.0.0.1" {
		return 0, false
	}
	n, err := strconv.ParseInt(p, 10, 32)
	if err != nil || n < 1 || n > 65535 {
		return 0, false
	}
	return int32(n), true
}

// dockerConfigJSON is the .dockerconfigjson value for one host.
func dockerConfigJSON(host, token string) []byte {
	user := kubecontract.PullSecretUsername
	b, err := json.Marshal(dockerConfig{Auths: map[string]dockerAuth{host: {
		Username: user,
		Password: token,
		Auth:     base64.StdEncoding.EncodeToString([]byte(user + ":" + token)),
	}}})
	if err != nil {
		panic(err) // strings only: cannot fail
	}
	return b
}

// ParsePullSecret reads a pull Secret the controller wrote: the edge's
// registry host ("127.0.0.1:<nodePort>") and the namespace's pull token.
// The error wraps ErrPullSecret and names the offending field; it never
// contains the token.
func ParsePullSecret(s *corev1.Secret) (host, token string, err error) {
	fail := func(format string, args ...any) (string, string, error) {
		return "", "", fmt.Errorf("%w %s/%s: %s", ErrPullSecret, s.Namespace, s.Name, fmt.Sprintf(format, args...))
	}
	cfg, problem := readDockerConfig(s)
	if problem != "" {
		return fail("%s", problem)
	}
	if len(cfg.Auths) != 1 {
		return fail("data[%s].auths has %d entries, want 1", corev1.DockerConfigJsonKey, len(cfg.Auths))
	}
	var a dockerAuth
	for h, auth := range cfg.Auths { // the only entry
		host, a = h, auth
	}
	token = a.Password
	field := fmt.Sprintf("data[%s].auths[%q]", corev1.DockerConfigJsonKey, host)
	if _, ok := NodePortOf(host); !ok {
		return fail("%s: host is not 127.0.0.1:<port>", field)
	}
	if a.Username != kubecontract.PullSecretUsername {
		return fail("%s.username %q, want %q", field, a.Username, kubecontract.PullSecretUsername)
	}
	if b, err := base64.RawURLEncoding.DecodeString(token); err != nil || len(b) != tokenBytes {
		return fail("%s.password is not a %d-byte base64url token", field, tokenBytes)
	}
	if a.Auth != base64.StdEncoding.EncodeToString([]byte(a.Username+":"+token)) {
		return fail("%s.auth does not match username and password", field)
	}
	return host, token, nil
}
