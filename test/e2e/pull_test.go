package e2e

import (
	"bytes"
	"maps"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// bigSize is the layer size of the big image: large enough that an edge
// which downloads a whole blob before answering, or holds it in memory,
// shows it.
const bigSize = 256 << 20

// tagTTL is short so that the upstream-down phase also exercises serving a
// stale tag (edge/README.md, "How a pull goes through the edge").
const tagTTL = 3 * time.Second

// TestPull pulls every kind of image with every client through the edge,
// by tag and by digest, and compares with pulling the upstream directly;
// then it takes the upstream away and pulls everything again from the
// cache, then restarts the edge and pulls once more.
func TestPull(t *testing.T) {
	t.Parallel()
	for _, store := range stores {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, store, envOptions{edgeArgs: []string{"--tag-ttl", tagTTL.String()}})
			imgs := harness.PushImages(t, e.reg.Addr, "e2e")
			big := harness.PushBigImage(t, e.reg.Addr, "e2e/big", "v1", bigSize)
			ctrd := harness.StartContainerd(t)
			all := []harness.Image{imgs.Schema2, imgs.OCI, imgs.Index}

			t.Run("cold", func(t *testing.T) {
				for _, im := range all {
					t.Run(kind(im), func(t *testing.T) {
						t.Parallel()
						pullAll(t, e, ctrd, im, true)
					})
				}
				t.Run("big", func(t *testing.T) {
					t.Parallel()
					pullBig(t, e, ctrd, big)
				})
			})
			if t.Failed() {
				return
			}
			t.Run("token endpoint used", func(t *testing.T) {
				if n := e.token.TokensIssued(t); n == 0 {
					t.Errorf("the edge fetched from the upstream without a Bearer token")
				}
			})
			t.Run("metrics", func(t *testing.T) {
				if v := e.edge.Metric(t, "edge_cache_misses_total", nil); v == 0 {
					t.Errorf("edge_cache_misses_total = 0 after cold pulls")
				}
				if v := e.edge.Metric(t, "edge_cache_hits_total", nil); v == 0 {
					t.Errorf("edge_cache_hits_total = 0 after repeated pulls")
				}
				if v := e.edge.Metric(t, "edge_upstream_requests_total", map[string]string{"upstream": prefix}); v == 0 {
					t.Errorf("edge_upstream_requests_total{upstream=%q} = 0", prefix)
				}
				if v := e.edge.Metric(t, "edge_bytes_served_total", map[string]string{"source": "cache"}); v == 0 {
					t.Errorf("edge_bytes_served_total{source=cache} = 0")
				}
			})

			e.stopUpstream()
			// Let every tag outlive its TTL: tag pulls now need a stale serve.
			time.Sleep(tagTTL + 500*time.Millisecond)
			t.Run("upstream down", func(t *testing.T) {
				for _, im := range all {
					t.Run(kind(im), func(t *testing.T) {
						t.Parallel()
						pullAll(t, e, ctrd, im, false)
					})
				}
			})
			t.Run("stale tags counted", func(t *testing.T) {
				if v := e.edge.Metric(t, "edge_stale_serves_total", nil); v == 0 {
					t.Errorf("edge_stale_serves_total = 0 after tag pulls past the TTL with the upstream down")
				}
			})

			e.edge.Restart(t)
			t.Run("after restart", func(t *testing.T) {
				for _, im := range all {
					t.Run(kind(im), func(t *testing.T) {
						t.Parallel()
						for _, ref := range []string{e.edgeRef(im), e.edgeDigestRef(im)} {
							if got := harness.CraneManifest(t, ref); !bytes.Equal(got, im.Manifest) {
								t.Errorf("crane manifest %s after restart differs from upstream", ref)
							}
							blobsEqual(t, "crane pull after restart "+ref, harness.CranePullOCI(t, ref), ociLayoutWant(im))
						}
					})
				}
			})
		})
	}
}

// kind names an image's test case.
func kind(im harness.Image) string {
	switch {
	case len(im.Children) > 0:
		return "index"
	case im.MediaType == "application/vnd.oci.image.manifest.v1+json":
		return "oci"
	default:
		return "schema2"
	}
}

// ociLayoutWant is every blob an OCI layout of im holds: its blobs plus the
// manifest and, for an index, the child manifests.
func ociLayoutWant(im harness.Image) map[string]bool {
	want := map[string]bool{im.Digest: true}
	for _, b := range im.Blobs() {
		want[b] = true
	}
	for _, c := range im.Children {
		want[c.Digest] = true
	}
	return want
}

// blobsEqual wants exactly the digests of want in got.
func blobsEqual(t *testing.T, what string, got map[string]int64, want map[string]bool) {
	t.Helper()
	for d := range want {
		if _, ok := got[d]; !ok {
			t.Errorf("%s: blob %s missing", what, d)
		}
	}
	for d := range got {
		if !want[d] {
			t.Errorf("%s: unexpected blob %s", what, d)
		}
	}
}

// pullAll pulls im by tag and by digest with crane, skopeo and containerd
// (crictl via the CRI, and ctr) and checks every byte against the image as
// pushed. With compareDirect it also pulls the upstream directly with the
// same client and wants the same result.
func pullAll(t *testing.T, e *env, ctrd *harness.Containerd, im harness.Image, compareDirect bool) {
	t.Helper()
	refs := []struct{ name, edge, direct string }{
		{"tag", e.edgeRef(im), e.directRef(im)},
		{"digest", e.edgeDigestRef(im), e.directDigestRef(im)},
	}
	isIndex := len(im.Children) > 0
	for _, r := range refs {
		t.Run("crane/"+r.name, func(t *testing.T) {
			got := harness.CraneManifest(t, r.edge)
			if !bytes.Equal(got, im.Manifest) {
				t.Errorf("crane manifest %s differs from the pushed manifest:\n%s\nwant\n%s", r.edge, got, im.Manifest)
			}
			if d := harness.CraneDigest(t, r.edge); d != im.Digest {
				t.Errorf("crane digest %s = %s, want %s", r.edge, d, im.Digest)
			}
			layout := harness.CranePullOCI(t, r.edge)
			blobsEqual(t, "crane pull "+r.edge, layout, ociLayoutWant(im))
			if compareDirect {
				if direct := harness.CranePullOCI(t, r.direct); !maps.Equal(layout, direct) {
					t.Errorf("crane pull through the edge and from the upstream differ:\n%v\n%v", layout, direct)
				}
			}
		})
		t.Run("skopeo/"+r.name, func(t *testing.T) {
			got := harness.ReadDirImage(t, harness.SkopeoCopyDir(t, r.edge, isIndex))
			if !bytes.Equal(got.Manifest, im.Manifest) {
				t.Errorf("skopeo copy %s: manifest.json differs from the pushed manifest", r.edge)
			}
			if compareDirect {
				direct := harness.ReadDirImage(t, harness.SkopeoCopyDir(t, r.direct, isIndex))
				if !bytes.Equal(got.Manifest, direct.Manifest) || !maps.Equal(got.Blobs, direct.Blobs) ||
					!maps.EqualFunc(got.Instances, direct.Instances, bytes.Equal) {
					t.Errorf("skopeo copy through the edge and from the upstream differ")
				}
			}
			for _, b := range im.Blobs() {
				if _, ok := got.Blobs[b]; !ok {
					t.Errorf("skopeo copy %s: blob %s missing", r.edge, b)
				}
			}
		})
	}
	// containerd pulls one reference at a time per image: the CRI shares
	// content between references, and a removal in one subtest must not
	// race a pull in another.
	t.Run("containerd", func(t *testing.T) {
		config := im.Config
		if isIndex {
			config = im.Children[0].Config // the host's linux/amd64 image
		}
		for _, r := range refs {
			if id := ctrd.CrictlPull(t, r.edge); id != config {
				t.Errorf("crictl pull %s: image ID %s, want config %s", r.edge, id, config)
			}
			if d := ctrd.CrictlInspect(t, r.edge).ManifestDigest(); d != im.Digest {
				t.Errorf("crictl pull %s: repo digest %s, want %s", r.edge, d, im.Digest)
			}
			if d := ctrd.CtrPull(t, r.edge); d != im.Digest {
				t.Errorf("ctr pull %s: digest %s, want %s", r.edge, d, im.Digest)
			}
			ctrd.CrictlRemove(t, r.edge)
			if _, err := ctrd.Ctr(t, "images", "rm", "--sync", r.edge); err != nil {
				t.Errorf("ctr images rm: %v", err)
			}
		}
	})
}

// pullBig pulls the big image with crane (every blob verified) and through
// the CRI.
func pullBig(t *testing.T, e *env, ctrd *harness.Containerd, im harness.Image) {
	t.Helper()
	blobsEqual(t, "crane pull big", harness.CranePullOCI(t, e.edgeRef(im)), ociLayoutWant(im))
	if id := ctrd.CrictlPull(t, e.edgeDigestRef(im)); id != im.Config {
		t.Errorf("crictl pull big: image ID %s, want %s", id, im.Config)
	}
	ctrd.CrictlRemove(t, e.edgeDigestRef(im))
}
