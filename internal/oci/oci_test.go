package oci

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParseDigest(t *testing.T) {
	t.Parallel()
	hex64 := strings.Repeat("ab", 32)
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"sha256", "sha256:" + hex64, true},
		{"sha512", "sha512:" + hex64 + hex64, true},
		{"no algorithm", hex64, false},
		{"md5", "md5:" + hex64[:32], false},
		{"short", "sha256:" + hex64[:63], false},
		{"upper hex", "sha256:" + strings.ToUpper(hex64), false},
		{"non hex", "sha256:" + hex64[:63] + "g", false},
		{"empty", "", false},
		{"traversal", "sha256:../../../../etc/passwd", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := ParseDigest(tc.in)
			if tc.ok != (err == nil) {
				t.Fatalf("ParseDigest(%q) = %v, %v; want ok=%v", tc.in, d, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidDigest) {
				t.Fatalf("error %v does not wrap ErrInvalidDigest", err)
			}
			if err == nil && d.String() != tc.in {
				t.Fatalf("String() = %q, want %q", d, tc.in)
			}
		})
	}
}

func TestFromBytesMatches(t *testing.T) {
	t.Parallel()
	d := FromBytes([]byte("hello"))
	h := d.Hash()
	h.Write([]byte("hello"))
	if !d.Matches(h) || d.String() != "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" {
		t.Fatalf("FromBytes(hello) = %s", d)
	}
}

func TestWriteErrorHead(t *testing.T) {
	t.Parallel()
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		rec := httptest.NewRecorder()
		WriteError(rec, httptest.NewRequest(method, "/v2/x", nil), NewError(404, CodeManifestUnknown, "nope"))
		if rec.Code != 404 || rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("%s: status %d type %q", method, rec.Code, rec.Header().Get("Content-Type"))
		}
		body := rec.Body.String()
		if method == http.MethodHead && body != "" {
			t.Fatalf("HEAD wrote a body: %q", body)
		}
		if method == http.MethodGet && body != `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"nope"}]}` {
			t.Fatalf("GET body %q", body)
		}
	}
}

func FuzzParseDigest(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("0", 64))
	f.Add("sha512:xyz")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			return
		}
		if d.String() != s || strings.ContainsAny(d.Hex, "/.") {
			t.Fatalf("accepted %q as %v", s, d)
		}
	})
}
