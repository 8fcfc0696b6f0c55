package route

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

const hexA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func testTable(t testing.TB) *Table {
	t.Helper()
	custom, _ := url.Parse("http://127.0.0.1:5001")
	tb, err := NewTable(append(Defaults(), Upstream{Prefix: "test", URL: custom}))
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestParse(t *testing.T) {
	t.Parallel()
	tb := testTable(t)
	tests := []struct {
		name    string
		path    string
		query   string
		want    Route
		wantErr error
	}{
		{name: "base", path: "/v2/", want: Route{Kind: KindBase}},
		{name: "base without slash", path: "/v2", want: Route{Kind: KindBase}},
		{name: "dockerhub official", path: "/v2/dockerhub/nginx/manifests/latest", want: Route{Kind: KindManifest, Prefix: "dockerhub", Repository: "library/nginx", Tag: "latest"}},
		{name: "dockerhub user", path: "/v2/dockerhub/bitnami/redis/manifests/7", want: Route{Kind: KindManifest, Prefix: "dockerhub", Repository: "bitnami/redis", Tag: "7"}},
		{name: "quayio alias", path: "/v2/quayio/coreos/etcd/manifests/v3", want: Route{Kind: KindManifest, Prefix: "quay", Repository: "coreos/etcd", Tag: "v3"}},
		{name: "ghcr deep", path: "/v2/ghcr/a/b/c/tags/list", want: Route{Kind: KindTags, Prefix: "ghcr", Repository: "a/b/c"}},
		{name: "blob", path: "/v2/k8s/pause/blobs/sha256:" + hexA, want: Route{Kind: KindBlob, Prefix: "k8s", Repository: "pause"}},
		{name: "custom", path: "/v2/test/app/manifests/v1", want: Route{Kind: KindManifest, Prefix: "test", Repository: "app", Tag: "v1"}},
		{name: "repository named manifests", path: "/v2/test/manifests/manifests/v1", want: Route{Kind: KindManifest, Prefix: "test", Repository: "manifests", Tag: "v1"}},
		{name: "mirror one segment", path: "/v2/nginx/manifests/1.25", want: Route{Kind: KindManifest, Prefix: "dockerhub", Repository: "library/nginx", Tag: "1.25"}},
		{name: "mirror library", path: "/v2/library/nginx/manifests/1.25", want: Route{Kind: KindManifest, Prefix: "dockerhub", Repository: "library/nginx", Tag: "1.25"}},
		{name: "ns selects host", path: "/v2/coreos/etcd/manifests/v3", query: "ns=quay.io", want: Route{Kind: KindManifest, Prefix: "quay", Repository: "coreos/etcd", Tag: "v3"}},
		{name: "ns docker.io", path: "/v2/library/busybox/manifests/1", query: "ns=docker.io", want: Route{Kind: KindManifest, Prefix: "dockerhub", Repository: "library/busybox", Tag: "1"}},
		{name: "ns custom host", path: "/v2/app/manifests/v1", query: "ns=127.0.0.1:5001", want: Route{Kind: KindManifest, Prefix: "test", Repository: "app", Tag: "v1"}},
		{name: "ns unknown", path: "/v2/app/manifests/v1", query: "ns=evil.example", wantErr: ErrNameUnknown},
		{name: "unknown prefix", path: "/v2/nosuch/a/b/manifests/v1", wantErr: ErrNameUnknown},
		{name: "traversal", path: "/v2/test/../../etc/passwd/manifests/x", wantErr: ErrNameInvalid},
		{name: "dot segment", path: "/v2/test/./a/manifests/x", wantErr: ErrNameInvalid},
		{name: "upper case", path: "/v2/test/UPPER/manifests/x", wantErr: ErrNameInvalid},
		{name: "empty segment", path: "/v2/test//a/manifests/x", wantErr: ErrNameInvalid},
		{name: "bad tag", path: "/v2/test/a/manifests/-x", wantErr: ErrTagInvalid},
		{name: "long tag", path: "/v2/test/a/manifests/" + strings.Repeat("t", 129), wantErr: ErrTagInvalid},
		{name: "bad digest", path: "/v2/test/a/blobs/sha256:xyz", wantErr: ErrDigestInvalid},
		{name: "md5 digest", path: "/v2/test/a/blobs/md5:" + hexA[:32], wantErr: ErrDigestInvalid},
		{name: "manifest bad digest", path: "/v2/test/a/manifests/sha256:" + hexA[:10], wantErr: ErrDigestInvalid},
		{name: "not v2", path: "/v1/x", wantErr: ErrNotRegistryPath},
		{name: "no endpoint", path: "/v2/test/a", wantErr: ErrNotRegistryPath},
		{name: "uploads", path: "/v2/test/a/blobs/uploads/", wantErr: ErrNotRegistryPath},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q, _ := url.ParseQuery(tc.query)
			got, err := tb.Parse(tc.path, q)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want %v", tc.path, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.path, err)
			}
			tc.want.Digest = got.Digest // digests are covered by the oci tests
			if got != tc.want {
				t.Fatalf("Parse(%q) = %+v, want %+v", tc.path, got, tc.want)
			}
		})
	}
}

func TestNewTableRejects(t *testing.T) {
	t.Parallel()
	u := func(s string) *url.URL { v, _ := url.Parse(s); return v }
	tests := []struct {
		name string
		ups  []Upstream
	}{
		{"empty prefix", []Upstream{{Prefix: "", URL: u("https://x.io")}}},
		{"slash prefix", []Upstream{{Prefix: "a/b", URL: u("https://x.io")}}},
		{"upper prefix", []Upstream{{Prefix: "Gcr", URL: u("https://x.io")}}},
		{"ftp scheme", []Upstream{{Prefix: "gcr", URL: u("ftp://x.io")}}},
		{"no host", []Upstream{{Prefix: "gcr", URL: u("https://")}}},
		{"credentials in URL", []Upstream{{Prefix: "gcr", URL: u("https://u:p@x.io")}}},
		{"alias clash", []Upstream{{Prefix: "a", URL: u("https://x.io")}, {Prefix: "b", Aliases: []string{"a"}, URL: u("https://y.io")}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := NewTable(tc.ups); err == nil {
				t.Fatal("NewTable accepted an invalid upstream")
			}
		})
	}
}

func TestOverrideDefault(t *testing.T) {
	t.Parallel()
	mirror, _ := url.Parse("http://127.0.0.1:9999")
	tb, err := NewTable(append(Defaults(), Upstream{Prefix: "dockerhub", URL: mirror}))
	if err != nil {
		t.Fatal(err)
	}
	u, ok := tb.Lookup("dockerhub")
	if !ok || u.URL.String() != mirror.String() {
		t.Fatalf("dockerhub = %v, want override %v", u.URL, mirror)
	}
	if n := len(tb.Upstreams()); n != 4 {
		t.Fatalf("len(Upstreams) = %d, want 4", n)
	}
}

// FuzzParse checks that no path makes Parse panic, and that every accepted
// route has a repository that is safe to use in a storage key.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"/v2/", "/v2/dockerhub/nginx/manifests/latest", "/v2/test/../x/blobs/sha256:" + hexA, "/v2/a/b/c/tags/list", "/v2/%2e%2e/manifests/x"} {
		f.Add(s, "")
	}
	f.Add("/v2/x/manifests/y", "ns=docker.io")
	tb := testTable(f)
	f.Fuzz(func(t *testing.T, path, rawQuery string) {
		q, _ := url.ParseQuery(rawQuery)
		rt, err := tb.Parse(path, q)
		if err != nil || rt.Kind == KindBase {
			return
		}
		for _, seg := range strings.Split(rt.Repository, "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("accepted unsafe repository %q from %q", rt.Repository, path)
			}
		}
		if _, ok := tb.Lookup(rt.Prefix); !ok {
			t.Fatalf("route to unknown prefix %q", rt.Prefix)
		}
	})
}
