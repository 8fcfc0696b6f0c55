package clash

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

// fixtureSecrets are the secret values of the test subscriptions: none may
// appear in a skip reason, an error or a log line.
var fixtureSecrets = regexp.MustCompile(`[A-Za-z0-9-]*Secret[A-Za-z0-9-]*`)

// TestParseControlPlaneRules: clashnode.Parse reads the subscription (its
// own tests cover the formats); the control plane adds its node-name rules
// and ErrSubscription.
func TestParseControlPlaneRules(t *testing.T) {
	t.Parallel()
	body := "proxies:\n" +
		"  - {name: good, type: socks5, server: 127.0.0.1, port: 1080, password: good-Secret-pw}\n" +
		"  - {name: Direct, type: socks5, server: 127.0.0.1, port: 1081, password: direct-Secret-pw}\n" +
		"  - {name: auto, type: socks5, server: 127.0.0.1, port: 1082}\n" +
		"  - {name: \"bell\\a\", type: socks5, server: 127.0.0.1, port: 1083}\n" +
		"  - {type: socks5, server: 127.0.0.1, port: 1084}\n"
	sub, err := Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(sub.Nodes) != 1 || sub.Nodes[0].Name() != "good" {
		t.Fatalf("nodes %v", sub.Nodes)
	}
	want := map[string]string{"Direct": "reserved", "auto": "reserved", "bell\a": "control characters", "proxies[4]": "name: must not be empty"}
	for _, s := range sub.Skipped {
		if !strings.Contains(s.Reason, want[s.Name]) || want[s.Name] == "" {
			t.Errorf("skipped %q: %q, want %q", s.Name, s.Reason, want[s.Name])
		}
		if fixtureSecrets.MatchString(s.Reason) {
			t.Errorf("skip reason leaks a secret: %q", s.Reason)
		}
	}
	if len(sub.Skipped) != len(want) {
		t.Errorf("skipped %+v", sub.Skipped)
	}
	for _, bad := range []string{"", "<html>login</html>", "proxies:\n  - {name: direct, type: socks5, server: h, port: 1}\n"} {
		if _, err := Parse([]byte(bad)); !errors.Is(err, ErrSubscription) {
			t.Errorf("Parse(%q) err = %v, want ErrSubscription", bad, err)
		}
	}
}
