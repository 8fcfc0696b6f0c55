package rewrite

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

// FuzzRewrite checks the properties the webhook relies on for any input:
// no panic; an untouched reference comes back byte for byte; a rewritten
// one parses, points at the edge, and is left untouched when rewritten
// again (re-admission changes nothing).
func FuzzRewrite(f *testing.F) {
	for _, tc := range goldenCases {
		f.Add(tc.image)
	}
	rw, err := New(testRules())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, image string) {
		res := rw.Rewrite(image)
		if res.Untouched() {
			if res.Rewritten != image || res.Prefix != "" || res.UpstreamURL != "" || res.Detail == "" {
				t.Fatalf("untouched %q: %+v", image, res)
			}
			return
		}
		if _, err := name.ParseReference(res.Rewritten); err != nil {
			t.Fatalf("Rewrite(%q) = %q, which does not parse: %v", image, res.Rewritten, err)
		}
		if !strings.HasPrefix(res.Rewritten, edge+"/"+res.Prefix+"/") {
			t.Fatalf("Rewrite(%q) = %q, not under the edge", image, res.Rewritten)
		}
		again := rw.Rewrite(res.Rewritten)
		if again.Reason != ReasonAtEdge || again.Rewritten != res.Rewritten {
			t.Fatalf("rewriting %q again gave %+v, want it untouched", res.Rewritten, again)
		}
	})
}
