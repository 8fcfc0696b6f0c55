package blobtest

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
)

func testList(t *testing.T, s blob.Store) {
	tag, err := blob.TagKey("ns", "dockerhub", "library/nginx", "latest")
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"a/b/1", "a/b/2", "a/bc/1", "a/c/1", "ab/1", "b/1", tag}
	for i, k := range keys {
		if i%2 == 0 {
			mustWrite(t, s, k, []byte(k), "")
		} else if err := s.Put(t.Context(), k, []byte(k), ""); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", append(slices.Sorted(slices.Values(keys[:6])), tag)},
		{"a/", []string{"a/b/1", "a/b/2", "a/bc/1", "a/c/1"}},
		{"a/b", []string{"a/b/1", "a/b/2", "a/bc/1"}},
		{"a/b/", []string{"a/b/1", "a/b/2"}},
		{"a/b/1", []string{"a/b/1"}},
		{"a", []string{"a/b/1", "a/b/2", "a/bc/1", "a/c/1", "ab/1"}},
		{"tenants/ns/", []string{tag}},
		{"zz", []string{}},
		{"a/zz/", []string{}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("prefix=%q", tc.prefix), func(t *testing.T) {
			t.Parallel()
			if got := listKeys(t, s, tc.prefix); !slices.Equal(got, tc.want) {
				t.Errorf("List(%q) = %v, want %v", tc.prefix, got, tc.want)
			}
		})
	}
}

func testListStop(t *testing.T, s blob.Store) {
	for _, k := range []string{"x/1", "x/2", "x/3"} {
		mustWrite(t, s, k, []byte(k), "")
	}
	stop := errors.New("stop")
	calls := 0
	err := s.List(t.Context(), "x/", func(string, blob.Info) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("List with failing fn = %v after %d calls, want the fn's error after 1 call", err, calls)
	}
}

func testInvalidKeys(t *testing.T, s blob.Store) {
	ctx := t.Context()
	data := []byte("x")
	for _, key := range []string{"../x", "/abs", "a//b", "a/./b", "a\\b", "", "a/", "a/..", "_uploads/x", "_meta/a", "a\x00b"} {
		t.Run(fmt.Sprintf("%q", key), func(t *testing.T) {
			if _, err := s.Stat(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("Stat error = %v", err)
			}
			if rc, err := s.Open(ctx, key, 0, -1); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("Open error = %v", err)
				if err == nil {
					rc.Close()
				}
			}
			if w, err := s.Create(ctx, key, ExpectFor(data, "")); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("Create error = %v", err)
				if err == nil {
					abort(t, ctx, w)
				}
			}
			if err := s.Put(ctx, key, data, ""); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("Put error = %v", err)
			}
			if err := s.Delete(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("Delete error = %v", err)
			}
		})
	}
	for _, prefix := range []string{"../", "/abs", "a//", "a/./", "_meta/"} {
		if err := s.List(ctx, prefix, func(string, blob.Info) error { return nil }); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("List(%q) error = %v, want ErrInvalidKey", prefix, err)
		}
	}
	if keys := listKeys(t, s, ""); len(keys) != 0 {
		t.Errorf("invalid keys left objects behind: %v", keys)
	}
}
