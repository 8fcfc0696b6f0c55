package config

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// Clash is the Clash part of the configuration (docs/clash.md). Everything
// but Mode and Pinned comes from the config file; Mode and Pinned start
// there too, and the admin API changes them at runtime (persisted).
type Clash struct {
	// Enabled turns the subscription, the probes and the proxy selection
	// on. Disabled, edges receive no proxy selection and dial directly.
	Enabled bool
	// SubscriptionURL is where the subscription is fetched from. It is a
	// secret: subscription URLs carry the account's token.
	SubscriptionURL Secret
	// RefreshInterval is how often the subscription is fetched.
	RefreshInterval time.Duration
	// ProbeInterval is how often every node is probed.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe through one node.
	ProbeTimeout time.Duration
	// ProbeURL is fetched through each node; empty means the first
	// upstream's /v2/ (by prefix).
	ProbeURL string
	// TolerancePercent and ToleranceMin keep the selection from flapping:
	// auto mode leaves the current node only for one that is faster by
	// more than both.
	TolerancePercent float64
	ToleranceMin     time.Duration
	// Mode is auto, pinned or direct.
	Mode selfhostv1.ProxyMode
	// Pinned is the node of pinned mode (and remembered in the others).
	Pinned string
	// ModeFromRuntime is set once Mode and Pinned were changed through the
	// admin API (or loaded from the state file): the state file then
	// records them and they replace the config file's on the next start.
	ModeFromRuntime bool
}

// ProxyPool is the runtime view of the Clash nodes that snapshots are
// built from. A ProxyPool in a State is immutable: it is replaced, never
// changed, so State.Clone shares it.
type ProxyPool struct {
	// Generation identifies the pool (one per successful subscription
	// fetch), so two views can be compared without comparing maps.
	Generation uint64
	// Nodes are every usable node by name, with their Clash JSON.
	Nodes map[string]*selfhostv1.ProxyNode
	// Order is the selection: the selected node first, then the fallback
	// candidates. Empty in direct mode and when no node is alive.
	Order []string
}

// Values of Upstream.proxy that are not node names.
const (
	ProxyAuto   = "auto"
	ProxyDirect = "direct"
)

// MaxNodeNameLength bounds a node name (bytes).
const MaxNodeNameLength = 128

// IsReservedNodeName tells whether name cannot name a node because it is
// a keyword of Upstream.proxy ("auto", "direct", in any case).
func IsReservedNodeName(name string) bool {
	return strings.EqualFold(name, ProxyAuto) || strings.EqualFold(name, ProxyDirect)
}

// NamesNode tells whether an Upstream.proxy value names a node: it is
// not empty and not a keyword ("auto", "direct", in any case, as edges
// read them).
func NamesNode(proxy string) bool { return proxy != "" && !IsReservedNodeName(proxy) }

// CheckNodeName checks the syntax of a node name: non-empty, at most
// MaxNodeNameLength bytes of valid UTF-8 without control characters.
func CheckNodeName(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return fmt.Errorf("must not be empty")
	case len(name) > MaxNodeNameLength:
		return fmt.Errorf("longer than %d bytes", MaxNodeNameLength)
	case !utf8.ValidString(name):
		return fmt.Errorf("not valid UTF-8")
	case strings.ContainsFunc(name, unicode.IsControl):
		return fmt.Errorf("contains control characters")
	}
	return nil
}

// CheckUpstreamProxy checks the syntax of an Upstream.proxy value: "",
// "auto", "direct" (in any case) or a node name. Whether the node exists is the store's
// question. field names the value in the error.
func CheckUpstreamProxy(field, v string) error {
	if !NamesNode(v) {
		return nil
	}
	if err := CheckNodeName(v); err != nil {
		return Invalidf("%s: %v", field, err)
	}
	return nil
}

// ProxyModeName is the config-file spelling of a mode: "auto", "pinned"
// or "direct" (unspecified counts as auto).
func ProxyModeName(m selfhostv1.ProxyMode) string {
	switch m {
	case selfhostv1.ProxyMode_PROXY_MODE_PINNED:
		return "pinned"
	case selfhostv1.ProxyMode_PROXY_MODE_DIRECT:
		return "direct"
	}
	return "auto"
}

// ParseProxyMode is the inverse of ProxyModeName.
func ParseProxyMode(s string) (selfhostv1.ProxyMode, bool) {
	switch s {
	case "auto":
		return selfhostv1.ProxyMode_PROXY_MODE_AUTO, true
	case "pinned":
		return selfhostv1.ProxyMode_PROXY_MODE_PINNED, true
	case "direct":
		return selfhostv1.ProxyMode_PROXY_MODE_DIRECT, true
	}
	return selfhostv1.ProxyMode_PROXY_MODE_UNSPECIFIED, false
}
