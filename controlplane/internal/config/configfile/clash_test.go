package configfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

const subURL = "https://sub.example-provider.net/api/v1/client/subscribe?token=SUBTOKEN-do-not-leak"

func clashConfig(section string) string {
	return "adminTokens: [\"" + adminTok + "\"]\nclash:\n" + section
}

func TestLoadClash(t *testing.T) {
	t.Parallel()
	st, err := New(writeConfig(t, clashConfig(`  enabled: true
  subscriptionUrl: "`+subURL+`"
  refreshInterval: 30m
  probeInterval: 20s
  probeUrl: https://registry-1.docker.io/v2/
  probeTimeout: 3s
  tolerance: {percent: 50, min: 40ms}
  mode: pinned
  pinned: "🇭🇰 HK 01"
`)), "", discard()).Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c := st.Clash
	want := config.Clash{
		Enabled: true, SubscriptionURL: subURL, RefreshInterval: 30 * time.Minute, ProbeInterval: 20 * time.Second,
		ProbeTimeout: 3 * time.Second, ProbeURL: "https://registry-1.docker.io/v2/", TolerancePercent: 50, ToleranceMin: 40 * time.Millisecond,
		Mode: selfhostv1.ProxyMode_PROXY_MODE_PINNED, Pinned: "🇭🇰 HK 01",
	}
	if c != want {
		t.Fatalf("clash = %+v\nwant  %+v", c, want)
	}
}

func TestLoadClashDefaults(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "sub.url"), []byte(subURL+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "controlplane.yaml")
	if err := os.WriteFile(cfg, []byte(clashConfig("  enabled: true\n  subscriptionUrlFile: sub.url\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := New(cfg, "", discard()).Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c := st.Clash
	if c.SubscriptionURL.Reveal() != subURL || c.RefreshInterval != time.Hour || c.ProbeInterval != time.Minute || c.ProbeTimeout != 5*time.Second ||
		c.TolerancePercent != 30 || c.ToleranceMin != 20*time.Millisecond || c.Mode != selfhostv1.ProxyMode_PROXY_MODE_AUTO || c.ProbeURL != "" {
		t.Fatalf("defaults: %+v", c)
	}
	// Without a clash: section, Clash is off with the same defaults.
	st, err = New(writeConfig(t, "adminTokens: [\""+adminTok+"\"]\n"), "", discard()).Load(t.Context())
	if err != nil || st.Clash.Enabled || st.Clash.ProbeInterval != time.Minute {
		t.Fatalf("no clash section: %+v, %v", st.Clash, err)
	}
}

func TestLoadClashRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, section string
		want          []string
	}{
		{"enabled without url", "  enabled: true\n", []string{"clash.subscriptionUrl: required"}},
		{"url not http", "  subscriptionUrl: \"ftp://x/SUBTOKEN-do-not-leak\"\n", []string{"clash.subscriptionUrl: scheme must be http or https"}},
		{"url and file", "  subscriptionUrl: \"" + subURL + "\"\n  subscriptionUrlFile: x\n", []string{"clash.subscriptionUrl: set the value or the file"}},
		{"url file missing", "  enabled: true\n  subscriptionUrlFile: /nonexistent/sub.url\n", []string{"clash.subscriptionUrl", "no such file"}},
		{"misspelt key", "  subscriptionURL: \"" + subURL + "\"\n", []string{`clash.subscriptionURL: unknown field (did you mean "subscriptionUrl"?)`}},
		{"bad durations", "  refreshInterval: soon\n  probeInterval: 1ms\n  probeTimeout: 2m\n", []string{"clash.refreshInterval: \"soon\"", "clash.probeInterval: 1ms is shorter", "clash.probeTimeout: 2m0s is longer"}},
		{"bad probe url", "  probeUrl: registry-1.docker.io\n", []string{"clash.probeUrl"}},
		{"bad tolerance", "  tolerance: {percent: -1, min: x}\n", []string{"clash.tolerance.percent", "clash.tolerance.min"}},
		{"bad mode", "  mode: fastest\n", []string{`clash.mode: "fastest"`}},
		{"pinned without node", "  mode: pinned\n", []string{"clash.pinned: mode pinned needs"}},
		{"upstream names a node without clash", "  enabled: false\nupstreams:\n  - {prefix: a, url: 'https://a.io', proxy: hk-1}\n", []string{`upstreams[0].proxy: "hk-1" names a node, but clash is not enabled`}},
		{"bad upstream proxy", "  enabled: false\nupstreams:\n  - {prefix: a, url: 'https://a.io', proxy: \"a\\tb\"}\n", []string{"upstreams[0].proxy: contains control characters"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(writeConfig(t, clashConfig(tc.section)), "", discard()).Load(t.Context())
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, config.ErrInvalid) && !strings.Contains(tc.name, "missing") {
				t.Errorf("err = %v, want config.ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not name %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "SUBTOKEN") {
				t.Errorf("error leaks the subscription URL:\n%v", err)
			}
		})
	}
}

// TestClashStatePersists: the admin API's mode and node, and upstream
// proxy overrides, survive a save and a load; the state file never holds
// the subscription URL.
func TestClashStatePersists(t *testing.T) {
	t.Parallel()
	cfgPath := writeConfig(t, clashConfig("  enabled: true\n  subscriptionUrl: \""+subURL+"\"\n  mode: auto\n"))
	src := New(cfgPath, "", discard())
	st, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// A save before any mode change records no clash section.
	if err := src.Save(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(src.StatePath()); strings.Contains(string(data), `"clash"`) {
		t.Fatalf("clash section without a runtime change:\n%s", data)
	}
	st.Clash.Mode, st.Clash.Pinned, st.Clash.ModeFromRuntime = selfhostv1.ProxyMode_PROXY_MODE_DIRECT, "hk-1", true
	st.Upstreams[0].Proxy = "hk-1"
	st.Proxy = &config.ProxyPool{Nodes: map[string]*selfhostv1.ProxyNode{"hk-1": {Name: "hk-1", ClashJson: `{"password":"NODE-SECRET"}`}}}
	if err := src.Save(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(src.StatePath())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"SUBTOKEN", "NODE-SECRET"} {
		if strings.Contains(string(data), s) {
			t.Fatalf("state file holds %s:\n%s", s, data)
		}
	}
	again, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if c := again.Clash; c.Mode != selfhostv1.ProxyMode_PROXY_MODE_DIRECT || c.Pinned != "hk-1" || !c.ModeFromRuntime || again.Upstreams[0].GetProxy() != "hk-1" || again.Proxy != nil {
		t.Fatalf("after reload: %+v, upstream proxy %q", c, again.Upstreams[0].GetProxy())
	}
	// A state file with a broken clash section stops the start.
	for _, bad := range []string{`{"format":1,"upstreams":[],"clash":{"mode":"fastest"}}`, `{"format":1,"upstreams":[],"clash":{"mode":"pinned"}}`} {
		if err := os.WriteFile(src.StatePath(), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := src.Load(t.Context()); err == nil || !strings.Contains(err.Error(), "clash.") {
			t.Errorf("state %s: %v", bad, err)
		}
	}
}
