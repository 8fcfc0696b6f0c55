package controller

import (
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// credSecret is a tenant's upstream-credentials Secret with body as its
// .dockerconfigjson.
func credSecret(typ corev1.SecretType, body string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: kubecontract.UpstreamCredentialsSecretName},
		Type:       typ,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(body)},
	}
}

func TestParseUpstreamCredentials(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-value"
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	dc := corev1.SecretTypeDockerConfigJson
	tests := []struct {
		name string
		typ  corev1.SecretType
		body string
		want map[string]string // host → "user:password"
		err  string            // substring of the error
	}{
		{"username and password", dc, `{"auths":{"ghcr.io":{"username":"u","password":"` + secret + `"}}}`,
			map[string]string{"ghcr.io": "u:" + secret}, ""},
		{"auth, Docker's Hub key", dc, `{"auths":{"https://index.docker.io/v1/":{"auth":"` + b64("u:"+secret) + `","email":"x@example.com"}}}`,
			map[string]string{"index.docker.io": "u:" + secret}, ""},
		{"auth with matching fields", dc, `{"auths":{"Quay.IO":{"username":"u","password":"p:q","auth":"` + b64("u:p:q") + `"}}}`,
			map[string]string{"quay.io": "u:p:q"}, ""},
		{"several", dc, `{"auths":{"ghcr.io":{"username":"a","password":"1"},"10.0.0.5:5000":{"username":"b","password":"2"}}}`,
			map[string]string{"ghcr.io": "a:1", "10.0.0.5:5000": "b:2"}, ""},
		{"wrong type", corev1.SecretTypeOpaque, `{"auths":{}}`, nil, `type "Opaque"`},
		{"not JSON", dc, `{"auths":` + secret, nil, "is not a JSON docker config"},
		{"bad host", dc, `{"auths":{"user@ghcr.io":{"username":"u","password":"` + secret + `"}}}`, nil, `auths["user@ghcr.io"]: not a registry host`},
		{"same registry twice", dc, `{"auths":{"ghcr.io":{"username":"u","password":"p"},"https://ghcr.io":{"username":"u","password":"p"}}}`, nil, "names the same registry"},
		{"no password", dc, `{"auths":{"ghcr.io":{"username":"` + secret + `"}}}`, nil, `auths["ghcr.io"].username, password: both needed`},
		{"auth not base64", dc, `{"auths":{"ghcr.io":{"auth":"` + secret + `!"}}}`, nil, `auths["ghcr.io"].auth: not base64`},
		{"auth without colon", dc, `{"auths":{"ghcr.io":{"auth":"` + b64(secret) + `"}}}`, nil, "not base64 of user:password"},
		{"auth disagrees", dc, `{"auths":{"ghcr.io":{"username":"u","password":"other","auth":"` + b64("u:"+secret) + `"}}}`, nil, "does not match"},
		{"too long", dc, `{"auths":{"ghcr.io":{"username":"u","password":"` + strings.Repeat("x", 5000) + `"}}}`, nil, "longer than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseUpstreamCredentials(credSecret(tc.typ, tc.body))
			if tc.err != "" {
				if !errors.Is(err, ErrUpstreamCredentials) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), b64("u:"+secret)) {
					t.Fatalf("the error shows a credential: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			flat := map[string]string{}
			for h, c := range got {
				flat[h] = c.Username.Reveal() + ":" + c.Password.Reveal()
			}
			if !maps.Equal(flat, tc.want) {
				t.Fatalf("got %v, want %v", slices.Sorted(maps.Keys(flat)), slices.Sorted(maps.Keys(tc.want)))
			}
			// config.Secret keeps them out of logs and errors.
			if s := fmt.Sprint(got); strings.Contains(s, secret) {
				t.Fatalf("credentials print themselves: %s", s)
			}
		})
	}
}

// A malformed Secret is reported once per version, and its namespace's
// edge goes on without it; a good one is what Edge returns.
func TestUpstreamCredentialsInSync(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTemplate(), optedIn("team-a"))
	e.mustSync("team-a")
	e.refresh()
	if edge, ok := e.c.Edge("team-a"); !ok || edge.RegistryCredentials != nil {
		t.Fatalf("without a Secret: %+v %v", edge, ok)
	}
	bad := credSecret(corev1.SecretTypeDockerConfigJson, `{"auths":{"ghcr.io":{"username":"u"}}}`)
	if _, err := e.client.CoreV1().Secrets("team-a").Create(e.ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.mustSync("team-a")
	e.mustSync("team-a")
	if n := e.logs.Count("upstream credentials Secret ignored"); n != 1 {
		t.Fatalf("reported %d times, want once:\n%s", n, e.logs)
	}
	if s := e.logs.String(); strings.Contains(s, `"username":"u"`) {
		t.Fatalf("the log shows the Secret's content:\n%s", s)
	}
	if edge, ok := e.c.Edge("team-a"); !ok || edge.RegistryCredentials != nil {
		t.Fatalf("with a malformed Secret: %+v %v", edge, ok)
	}
	good := credSecret(corev1.SecretTypeDockerConfigJson, `{"auths":{"ghcr.io":{"username":"u","password":"p"}}}`)
	good.ResourceVersion = ""
	if _, err := e.client.CoreV1().Secrets("team-a").Update(e.ctx, good, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.mustSync("team-a")
	e.refresh()
	edge, _ := e.c.Edge("team-a")
	if c, ok := edge.RegistryCredentials["ghcr.io"]; !ok || c != (config.Credentials{Username: "u", Password: "p"}) {
		t.Fatalf("with a good Secret: %v", edge.RegistryCredentials)
	}
}
