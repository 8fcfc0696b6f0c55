// Package clashnode is the one Clash node model of the repository, shared
// by the edge (internal/proxydial dials through nodes) and the control
// plane (controlplane/internal/clash probes and selects them), with
// mihomo (github.com/metacubex/mihomo) as the protocol library
// (docs/clash.md):
//
//   - New validates one Clash proxy map and builds its mihomo adapter from
//     the map's canonical JSON, exactly as an edge receives it
//     (ProxyNode.clash_json), so a node the control plane accepts is a
//     node every edge accepts; FromJSON and FromProto are the edge's side.
//   - Parse reads a document of nodes: Clash YAML (a proxies: list, one
//     node map or a list of maps) or share links (ss://, vmess://,
//     socks5://, ...), one a line, plain or base64-encoded. A bad entry is
//     reported with its reason, never silently dropped; callers choose to
//     skip it (a subscription) or refuse the whole value (a flag).
//   - Redactor knows a node's secret values (one list of secret keys for
//     every node type mihomo parses) and removes them from any text:
//     errors and log lines about a node never carry them.
//   - Node.DialContext opens one TCP connection through the node and
//     Node.URLTest fetches a URL through it; failover across nodes is
//     internal/proxydial's job, measuring and choosing controlplane's.
//
// mihomo keeps process-wide state (its logger, resolver switches, a CA
// pool). Setup makes it once; every entry point of this package calls it.
// Importing mihomo starts two goroutines at init that live for the whole
// process (common/observable.(*Observable).process for its log,
// tunnel/statistic.(*Manager).handle for its traffic counters); goroutine
// leak checkers must ignore them. Only adapter, common/convert,
// component/..., constant and log of mihomo are imported: the others pull
// sing-tun, which the module proxy refuses.
package clashnode

import "errors"

// ErrInvalid marks a node that cannot be used: its map, its share link or
// a value meant to hold nodes. Its messages never contain a node's
// secrets.
var ErrInvalid = errors.New("invalid proxy node")
