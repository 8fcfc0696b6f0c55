package e2e

import (
	"bytes"
	"net/http"
	"net/url"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestMirrorMode covers clients configured with the edge as a registry
// mirror instead of rewritten images (edge/README.md, "Path mapping"): a path without a known
// prefix plus containerd's ?ns=<registry host> selects the upstream by
// host.
func TestMirrorMode(t *testing.T) {
	t.Parallel()
	for _, store := range stores {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, store, envOptions{})
			im := harness.PushImage(t, e.reg.Addr, "e2e/mirrored", "v1", "application/vnd.docker.distribution.manifest.v2+json", 2, 128<<10)
			ns := "?ns=" + url.QueryEscape(e.token.Addr)

			t.Run("http by tag and digest", func(t *testing.T) {
				for _, ref := range []string{im.Tag, im.Digest} {
					r := do(t, http.MethodGet, e.edge.URL+"/v2/"+im.Repo+"/manifests/"+ref+ns, map[string]string{
						"Accept": string(im.MediaType),
					})
					if r.status != http.StatusOK || r.bodyErr != nil || !bytes.Equal(r.body, im.Manifest) {
						t.Errorf("GET manifest %s with ns: status %d, err %v, body %s", ref, r.status, r.bodyErr, r.body)
					}
					if got := r.header.Get("Docker-Content-Digest"); got != im.Digest {
						t.Errorf("Docker-Content-Digest %q, want %s", got, im.Digest)
					}
				}
				for _, b := range im.Blobs() {
					r := do(t, http.MethodGet, e.edge.URL+"/v2/"+im.Repo+"/blobs/"+b+ns, nil)
					if r.status != http.StatusOK || r.bodyErr != nil || harness.SHA256(r.body) != b {
						t.Errorf("GET blob %s with ns: status %d, err %v", b, r.status, r.bodyErr)
					}
				}
			})

			t.Run("unknown ns host", func(t *testing.T) {
				r := do(t, http.MethodGet, e.edge.URL+"/v2/"+im.Repo+"/manifests/"+im.Tag+"?ns=registry.invalid.example", nil)
				wantError(t, r, []int{http.StatusNotFound}, "NAME_UNKNOWN")
			})

			t.Run("containerd hosts.toml mirror", func(t *testing.T) {
				before := e.edge.Metric(t, "edge_bytes_served_total", nil)
				ctrd := harness.StartContainerdWith(t, harness.ContainerdOptions{
					Mirrors: map[string]string{e.token.Addr: e.edge.URL},
				})
				// containerd falls back to the origin when the mirror fails,
				// so the edge's own counter proves the mirror served it.
				fresh := harness.PushImage(t, e.reg.Addr, "e2e/mirrored-cri", "v1", "application/vnd.oci.image.manifest.v1+json", 2, 128<<10)
				if id := ctrd.CrictlPull(t, fresh.Ref(e.token.Addr, "")); id != fresh.Config {
					t.Errorf("crictl pull via mirror: image ID %s, want %s", id, fresh.Config)
				}
				if after := e.edge.Metric(t, "edge_bytes_served_total", nil); after <= before {
					t.Errorf("edge_bytes_served_total did not grow (%v → %v): containerd did not pull through the edge", before, after)
				}
			})
		})
	}
}
