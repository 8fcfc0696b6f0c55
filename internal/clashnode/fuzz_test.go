package clashnode

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: no input makes Parse panic, and every node it returns is
// usable (a name, a server, JSON).
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("vmess://eyJhZGQiOiIxLjIuMy40IiwicG9ydCI6Ijk5OTk5In0\n"))
	f.Add([]byte("vless://@:0?type=grpc\nhysteria2://x@[::1]:1?obfs=salamander\ntuic://a:b@h:1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		sub, err := Parse(data, ParseOptions{})
		if err != nil {
			return
		}
		for _, n := range sub.Nodes {
			if n.Name() == "" || n.Server() == "" || n.JSON() == "" {
				t.Fatalf("unusable node %+v", n)
			}
			n.Close()
		}
	})
}
