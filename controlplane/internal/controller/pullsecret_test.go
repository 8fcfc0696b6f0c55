package controller

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNewPullToken(t *testing.T) {
	t.Parallel()
	a, err := NewPullToken()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewPullToken()
	raw, err := base64.RawURLEncoding.DecodeString(a)
	if err != nil || len(raw) != 32 || a == b {
		t.Fatalf("tokens %q %q: want distinct 32-byte base64url", a, b)
	}
}

func TestParsePullSecret(t *testing.T) {
	t.Parallel()
	token, err := NewPullToken()
	if err != nil {
		t.Fatal(err)
	}
	secret := func(typ corev1.SecretType, data string) *corev1.Secret {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "pull"}, Type: typ}
		if data != "" {
			s.Data = map[string][]byte{corev1.DockerConfigJsonKey: []byte(data)}
		}
		return s
	}
	auth := func(user, pass string) string { return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass)) }
	good := string(dockerConfigJSON("127.0.0.1:30080", token))
	tests := []struct {
		name    string
		secret  *corev1.Secret
		wantErr string // "" for valid
	}{
		{"written by the controller", secret(corev1.SecretTypeDockerConfigJson, good), ""},
		{"opaque", secret(corev1.SecretTypeOpaque, good), "type"},
		{"no data", secret(corev1.SecretTypeDockerConfigJson, ""), "data[.dockerconfigjson] is missing"},
		{"garbage", secret(corev1.SecretTypeDockerConfigJson, "{not json "+token), "not a JSON docker config"},
		{"no auths", secret(corev1.SecretTypeDockerConfigJson, `{"auths":{}}`), "0 entries"},
		{"two hosts", secret(corev1.SecretTypeDockerConfigJson,
			`{"auths":{"127.0.0.1:1":{"username":"selfhost","password":"`+token+`","auth":"`+auth("selfhost", token)+`"},"127.0.0.1:2":{}}}`), "2 entries"},
		{"other host", secret(corev1.SecretTypeDockerConfigJson,
			`{"auths":{"localhost:30080":{"username":"selfhost","password":"`+token+`","auth":"`+auth("selfhost", token)+`"}}}`), "host is not 127.0.0.1"},
		{"other user", secret(corev1.SecretTypeDockerConfigJson,
			`{"auths":{"127.0.0.1:30080":{"username":"root","password":"`+token+`","auth":"`+auth("root", token)+`"}}}`), ".username"},
		{"weak password", secret(corev1.SecretTypeDockerConfigJson,
			`{"auths":{"127.0.0.1:30080":{"username":"selfhost","password":"hunter2","auth":"`+auth("selfhost", "hunter2")+`"}}}`), ".password"},
		{"auth mismatch", secret(corev1.SecretTypeDockerConfigJson,
			`{"auths":{"127.0.0.1:30080":{"username":"selfhost","password":"`+token+`","auth":"`+auth("selfhost", "x")+`"}}}`), ".auth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			host, got, err := ParsePullSecret(tt.secret)
			if tt.wantErr == "" {
				if err != nil || host != "127.0.0.1:30080" || got != token {
					t.Fatalf("ParsePullSecret = %q, token ok %v, %v", host, got == token, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrPullSecret) {
				t.Fatalf("ParsePullSecret: %v, want ErrPullSecret naming %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), token) {
				t.Fatalf("error contains the token: %v", err)
			}
		})
	}
}

func TestNodePortOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		host string
		port int32
		ok   bool
	}{
		{"127.0.0.1:30080", 30080, true},
		{EdgeHost(31999), 31999, true},
		{"localhost:30080", 0, false},
		{"127.0.0.1:0", 0, false},
		{"127.0.0.1:x", 0, false},
		{"127.0.0.1", 0, false},
	}
	for _, tt := range tests {
		if p, ok := NodePortOf(tt.host); p != tt.port || ok != tt.ok {
			t.Errorf("NodePortOf(%q) = %d, %v; want %d, %v", tt.host, p, ok, tt.port, tt.ok)
		}
	}
}
