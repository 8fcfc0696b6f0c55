package registry

import "testing"

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-1", "bytes=-5", "bytes=3-", "bytes=9-1", "bytes=a-b", "bytes=0-1,2-3", "items=1-2"} {
		f.Add(s, int64(10))
	}
	f.Fuzz(func(t *testing.T, spec string, size int64) {
		if size < 0 {
			return
		}
		off, n, err := parseRange(spec, size)
		if err != nil {
			return
		}
		if off < 0 || n <= 0 || off+n > size {
			t.Fatalf("parseRange(%q, %d) = %d, %d: outside the blob", spec, size, off, n)
		}
	})
}
