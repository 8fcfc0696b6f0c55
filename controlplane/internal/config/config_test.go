package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

const token = "edge-token-do-not-print"

func TestSecretNeverPrints(t *testing.T) {
	t.Parallel()
	st := &State{AdminTokens: []Secret{token}, Namespaces: map[string]*Namespace{"a": {EdgeToken: token, PullToken: token}}}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("state", "ns", st.Namespaces["a"], "admin", st.AdminTokens)
	js, _ := json.Marshal(st)
	for name, out := range map[string]string{
		"%v":   fmt.Sprintf("%v", *st.Namespaces["a"]),
		"%+v":  fmt.Sprintf("%+v", *st.Namespaces["a"]),
		"%#v":  fmt.Sprintf("%#v", *st.Namespaces["a"]),
		"json": string(js),
		"slog": logs.String(),
	} {
		if strings.Contains(out, token) {
			t.Errorf("%s prints the token: %s", name, out)
		}
	}
	if st.Namespaces["a"].EdgeToken.Reveal() != token {
		t.Fatal("Reveal lost the value")
	}
}

func TestClone(t *testing.T) {
	t.Parallel()
	st := &State{
		Upstreams:  []*selfhostv1.Upstream{{Prefix: "a", Url: "https://a.io"}},
		Namespaces: map[string]*Namespace{"a": {AllowedPrefixes: []string{"a"}}},
	}
	c := st.Clone()
	c.Upstreams[0].Url = "https://b.io"
	c.Namespaces["a"].AllowedPrefixes[0] = "b"
	c.Namespaces["b"] = &Namespace{}
	if st.Upstreams[0].GetUrl() != "https://a.io" || st.Namespaces["a"].AllowedPrefixes[0] != "a" || len(st.Namespaces) != 1 {
		t.Fatal("Clone shares memory with the original")
	}
}

func TestInvalidAndProblems(t *testing.T) {
	t.Parallel()
	specErr := configspec.ValidatePrefix("upstreams[0].prefix", "library")
	joined := fmt.Errorf("config x.yaml: %w", errors.Join(Invalid(specErr), Invalidf("namespaces.a: bad")))
	if !errors.Is(joined, ErrInvalid) || !errors.Is(joined, configspec.ErrInvalid) {
		t.Fatal("errors.Is lost a sentinel")
	}
	ps := Problems(joined)
	if len(ps) != 2 || ps[0].Error() != `upstreams[0].prefix "library": reserved` || ps[1].Error() != "namespaces.a: bad" {
		t.Fatalf("problems %q", ps)
	}
	if one := Problems(errors.New("x")); len(one) != 1 {
		t.Fatalf("single error split into %d", len(one))
	}
}

func TestRegistryHost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key, want string
		ok        bool
	}{
		{"ghcr.io", "ghcr.io", true},
		{"https://index.docker.io/v1/", "index.docker.io", true},
		{"HTTP://Registry.Example:5000/", "registry.example:5000", true},
		{"10.0.0.5:5000", "10.0.0.5:5000", true},
		{"[::1]:5000", "[::1]:5000", true},
		{"", "", false},
		{"https://", "", false},
		{"user@ghcr.io", "", false},
		{"ghcr io", "", false},
		{"ghcr.io:port", "", false},
	}
	for _, tc := range tests {
		got, ok := RegistryHost(tc.key)
		if got != tc.want || ok != tc.ok {
			t.Errorf("RegistryHost(%q) = %q, %v; want %q, %v", tc.key, got, ok, tc.want, tc.ok)
		}
	}
}
