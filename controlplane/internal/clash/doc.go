// Package clash turns a Clash subscription into a pool of proxy nodes,
// measures them and selects the ones edges dial upstream through
// (docs/clash.md). Each job has its own type behind an interface:
//
//   - SubscriptionSource fetches the subscription (HTTPSource: size cap,
//     timeout, the URL scrubbed from every error);
//   - Parse reads the subscription with internal/clashnode (Clash YAML or
//     base64/plain share links, every node validated by mihomo's parser,
//     bad entries skipped with a reason) under the control plane's rules
//     for node names;
//   - Prober measures one node by fetching a URL through it (MihomoProber:
//     mihomo's URLTest with a deadline);
//   - Selector orders the nodes: the selected one first, then fallbacks
//     (ToleranceSelector: lowest latency with a tolerance, pinned, direct);
//   - Manager runs them — periodic and on-demand refreshes and probes,
//     edge failure reports — and commits the selection to the control
//     plane's store, which builds and pushes the edges' snapshots.
//
// The node model, mihomo's process-wide set-up and the redaction of node
// secrets are internal/clashnode's, shared with the edge's dialer.
//
// Secrets — node passwords and UUIDs, the subscription URL — never reach a
// log line or an error: node errors are scrubbed of the node's secret
// values, fetch errors of the URL.
package clash

import "errors"

// Errors of the package; match them with errors.Is.
var (
	// ErrSubscription: the subscription could not be fetched or holds no
	// usable node. The pool in use is kept.
	ErrSubscription = errors.New("subscription unusable")
	// ErrUnknownNode: no node of that name is in the pool.
	ErrUnknownNode = errors.New("unknown node")
	// ErrNoPinnedNode: pinned mode needs a node that is in the pool.
	ErrNoPinnedNode = errors.New("no node to pin")
)
