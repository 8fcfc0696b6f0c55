package configfile

import (
	"fmt"
	"net/url"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// clashSpec is the clash: section of the YAML file. The Helm chart's
// clash.enabled and clash.subscriptionUrl map onto it unchanged.
type clashSpec struct {
	Enabled             bool           `json:"enabled"`
	SubscriptionURL     string         `json:"subscriptionUrl"`
	SubscriptionURLFile string         `json:"subscriptionUrlFile"`
	RefreshInterval     string         `json:"refreshInterval"`
	ProbeInterval       string         `json:"probeInterval"`
	ProbeURL            string         `json:"probeUrl"`
	ProbeTimeout        string         `json:"probeTimeout"`
	Tolerance           *toleranceSpec `json:"tolerance"`
	Mode                string         `json:"mode"`
	Pinned              string         `json:"pinned"`
}

type toleranceSpec struct {
	Percent *float64 `json:"percent"`
	Min     string   `json:"min"`
}

// clashState is the clash part of the state file: the mode and node the
// admin API chose.
type clashState struct {
	Mode   string `json:"mode"`
	Pinned string `json:"pinned,omitempty"`
}

// Defaults and bounds of the clash: section.
const (
	DefaultRefreshInterval  = time.Hour
	DefaultProbeInterval    = time.Minute
	DefaultProbeTimeout     = 5 * time.Second
	DefaultTolerancePercent = 30
	DefaultToleranceMin     = 20 * time.Millisecond //nolint:revive // time-naming: Min is the minimum (tolerance.min), not minutes

	minRefreshInterval = time.Second
	minProbeInterval   = 100 * time.Millisecond
	maxProbeTimeout    = time.Minute
)

// parseClash converts and checks the clash: section; bad reports each
// problem, naming the field but never the subscription URL.
func parseClash(spec *clashSpec, dir string, bad func(string, ...any)) config.Clash {
	c := config.Clash{
		RefreshInterval:  DefaultRefreshInterval,
		ProbeInterval:    DefaultProbeInterval,
		ProbeTimeout:     DefaultProbeTimeout,
		TolerancePercent: DefaultTolerancePercent,
		ToleranceMin:     DefaultToleranceMin,
		Mode:             selfhostv1.ProxyMode_PROXY_MODE_AUTO,
	}
	if spec == nil {
		return c
	}
	c.Enabled = spec.Enabled
	raw, err := inlineOrFile(spec.SubscriptionURL, spec.SubscriptionURLFile, dir)
	switch {
	case err != nil:
		// The error names the file, not its content.
		bad("clash.subscriptionUrl: %v", err)
	case raw == "" && spec.Enabled:
		bad("clash.subscriptionUrl: required when clash.enabled is true (subscriptionUrl or subscriptionUrlFile)")
	case raw != "":
		if err := checkSubscriptionURL(raw); err != nil {
			bad("clash.subscriptionUrl: %v", err)
		}
	}
	c.SubscriptionURL = config.Secret(raw)
	duration := func(field, v string, def, lo, hi time.Duration) time.Duration {
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			bad("clash.%s: %q is not a duration (e.g. 30s, 5m, 1h)", field, v)
		case d < lo:
			bad("clash.%s: %s is shorter than %s", field, d, lo)
		case hi > 0 && d > hi:
			bad("clash.%s: %s is longer than %s", field, d, hi)
		}
		return d
	}
	c.RefreshInterval = duration("refreshInterval", spec.RefreshInterval, DefaultRefreshInterval, minRefreshInterval, 0)
	c.ProbeInterval = duration("probeInterval", spec.ProbeInterval, DefaultProbeInterval, minProbeInterval, 0)
	c.ProbeTimeout = duration("probeTimeout", spec.ProbeTimeout, DefaultProbeTimeout, time.Millisecond, maxProbeTimeout)
	if spec.ProbeURL != "" {
		if u, err := url.Parse(spec.ProbeURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("clash.probeUrl: %q: want an http:// or https:// URL", spec.ProbeURL)
		}
		c.ProbeURL = spec.ProbeURL
	}
	if t := spec.Tolerance; t != nil {
		if t.Percent != nil {
			if *t.Percent < 0 || *t.Percent > 1000 {
				bad("clash.tolerance.percent: %v is not between 0 and 1000", *t.Percent)
			}
			c.TolerancePercent = *t.Percent
		}
		c.ToleranceMin = duration("tolerance.min", t.Min, DefaultToleranceMin, 0, 0)
	}
	if spec.Mode != "" {
		m, ok := config.ParseProxyMode(spec.Mode)
		if !ok {
			bad("clash.mode: %q: want auto, pinned or direct", spec.Mode)
		}
		c.Mode = m
	}
	if spec.Pinned != "" {
		if err := config.CheckNodeName(spec.Pinned); err != nil {
			bad("clash.pinned: %v", err)
		}
		c.Pinned = spec.Pinned
	}
	if c.Mode == selfhostv1.ProxyMode_PROXY_MODE_PINNED && c.Pinned == "" {
		bad("clash.pinned: mode pinned needs the name of a node")
	}
	return c
}

// checkSubscriptionURL never puts the URL (a secret) into its error.
func checkSubscriptionURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("does not parse as a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("scheme must be http or https")
	case u.Host == "":
		return fmt.Errorf("needs a host")
	}
	return nil
}

// applyClashState lets the state file's mode and node replace the config
// file's.
func applyClashState(c *config.Clash, s *clashState) error {
	m, ok := config.ParseProxyMode(s.Mode)
	if !ok {
		return config.Invalidf("clash.mode: %q: want auto, pinned or direct", s.Mode)
	}
	if s.Pinned != "" {
		if err := config.CheckNodeName(s.Pinned); err != nil {
			return config.Invalidf("clash.pinned: %v", err)
		}
	}
	if m == selfhostv1.ProxyMode_PROXY_MODE_PINNED && s.Pinned == "" {
		return config.Invalidf("clash.pinned: mode pinned needs the name of a node")
	}
	c.Mode, c.Pinned, c.ModeFromRuntime = m, s.Pinned, true
	return nil
}

// checkUpstreamProxies refuses upstreams that name a node while Clash is
// disabled. Whether a named node exists is only known once the
// subscription is fetched; until then its upstream follows the selection.
func checkUpstreamProxies(st *config.State, upstreamsFrom string) error {
	if st.Clash.Enabled {
		return nil
	}
	for i, u := range st.Upstreams {
		if p := u.GetProxy(); config.NamesNode(p) {
			return config.Invalidf("upstreams[%d].proxy: %q names a node, but clash is not enabled (in %s)", i, p, upstreamsFrom)
		}
	}
	return nil
}
