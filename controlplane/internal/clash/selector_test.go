package clash

import (
	"strings"
	"testing"
	"time"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

const (
	auto   = selfhostv1.ProxyMode_PROXY_MODE_AUTO
	pinned = selfhostv1.ProxyMode_PROXY_MODE_PINNED
	direct = selfhostv1.ProxyMode_PROXY_MODE_DIRECT
)

// candidates builds candidates from "name=latency" ("name=dead" for a dead
// node, "name=new" for one never probed).
func candidates(spec string) []Candidate {
	var out []Candidate
	for _, f := range strings.Fields(spec) {
		name, lat, _ := strings.Cut(f, "=")
		switch lat {
		case "dead", "new":
			out = append(out, Candidate{Name: name})
		default:
			d, err := time.ParseDuration(lat)
			if err != nil {
				panic(err)
			}
			out = append(out, Candidate{Name: name, Alive: true, Latency: d})
		}
	}
	return out
}

func TestToleranceSelector(t *testing.T) {
	t.Parallel()
	sel := ToleranceSelector{Tolerance: Tolerance{Percent: 30, Min: 20 * time.Millisecond}}
	tests := []struct {
		name   string
		mode   selfhostv1.ProxyMode
		pinned string
		prev   string
		nodes  string
		want   string
	}{
		{"first selection: by latency", auto, "", "", "a=300ms b=100ms c=200ms d=50ms e=400ms", "d b c a"},
		{"ties keep subscription order", auto, "", "", "a=10ms b=10ms c=10ms", "a b c"},
		{"dead and new nodes never selected", auto, "", "", "a=dead b=80ms c=new d=90ms", "b d"},
		{"nothing alive: no node", auto, "", "a b", "a=dead b=dead", ""},
		{"empty pool", auto, "", "", "", ""},
		{"jitter does not flap", auto, "", "a b c", "a=105ms b=95ms c=101ms", "a b c"},
		{"faster by 30% but only 15ms: keep", auto, "", "a b", "a=50ms b=35ms", "a b"},
		{"faster by 25ms but only 10%: keep", auto, "", "a b", "a=250ms b=225ms", "a b"},
		{"clearly faster: switch", auto, "", "a b", "a=200ms b=100ms", "b a"},
		{"clearly faster behind a near tie: still switch", auto, "", "a b c", "a=200ms b=180ms c=50ms", "c a b"},
		{"selected dies: next incumbent takes over", auto, "", "a b c", "a=dead b=120ms c=100ms", "b c"},
		{"new node slots in only when clearly faster", auto, "", "a b c d", "a=100ms b=110ms c=120ms d=130ms e=10ms", "e a b c"},
		{"loopback zero latencies", auto, "", "b", "a=0s b=1ms", "b a"},
		{"pinned first, then fallbacks", pinned, "c", "", "a=10ms b=20ms c=300ms d=5ms", "c d a b"},
		{"pinned even when dead", pinned, "c", "", "a=10ms c=dead", "c a"},
		{"pinned node gone: auto", pinned, "zz", "", "a=10ms b=5ms", "b a"},
		{"direct: no node", direct, "", "a", "a=10ms", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := sel.Select(SelectInput{Mode: tc.mode, Pinned: tc.pinned, Previous: strings.Fields(tc.prev), Nodes: candidates(tc.nodes)})
			if strings.Join(got, " ") != tc.want {
				t.Fatalf("Select = %q, want %q", strings.Join(got, " "), tc.want)
			}
		})
	}
}

func TestToleranceSelectorFallbacks(t *testing.T) {
	t.Parallel()
	nodes := candidates("a=1ms b=2ms c=3ms d=4ms e=5ms f=6ms")
	for _, tc := range []struct {
		fallbacks int
		want      string
	}{{0, "a b c d"}, {-1, "a"}, {1, "a b"}, {10, "a b c d e f"}} {
		got := ToleranceSelector{Fallbacks: tc.fallbacks}.Select(SelectInput{Mode: auto, Nodes: nodes})
		if strings.Join(got, " ") != tc.want {
			t.Errorf("Fallbacks %d: %v, want %s", tc.fallbacks, got, tc.want)
		}
	}
}

// TestToleranceSelectorStableUnderNoise feeds 200 rounds of ±10 ms jitter
// around two nodes of equal speed: the selection must never move.
func TestToleranceSelectorStableUnderNoise(t *testing.T) {
	t.Parallel()
	sel := ToleranceSelector{Tolerance: Tolerance{Percent: 30, Min: 20 * time.Millisecond}}
	prev := []string{"a", "b"}
	for i := range 200 {
		j := time.Duration(i%5-2) * 5 * time.Millisecond // -10ms … +10ms
		nodes := []Candidate{{"a", true, 100*time.Millisecond + j}, {"b", true, 100*time.Millisecond - j}}
		got := sel.Select(SelectInput{Mode: auto, Previous: prev, Nodes: nodes})
		if strings.Join(got, " ") != "a b" {
			t.Fatalf("round %d: %v", i, got)
		}
		prev = got
	}
}
