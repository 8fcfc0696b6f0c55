// Package proxydial dials upstream registries through Clash proxy nodes
// (docs/edge-proxy.md), with mihomo (github.com/metacubex/mihomo) as the
// protocol library.
//
// A Node is one Clash node of internal/clashnode (the model the control
// plane uses too), built from ProxyNode.clash_json of the control protocol
// (ParseSelection) or from a --proxy flag value (ParseNodes). A Dialer
// holds an ordered list of nodes and offers DialContext with the
// signature of net.Dialer.DialContext, for upstream.WithDialer:
//
//   - a dial through node i that fails is retried through node i+1 within
//     the same DialContext call, so the HTTP transport sees one dial;
//   - a connection whose proxy accepted the dial but never delivers a first
//     byte (a down destination through ss, trojan or vmess is a plain EOF on
//     the first read; a wrong ss password is silence) is moved to the next
//     node transparently: what the client wrote before its first read is
//     replayed on the new connection;
//   - a node that failed is skipped for a while (Options.FailureMemory)
//     unless no other node is left;
//   - every failure is reported to an Observer (metrics, and the control
//     plane's ProxyFailure message) without blocking the dial.
//
// mihomo's process-wide set-up, the node model and the redaction of node
// secrets are internal/clashnode's; this package adds what only a dialer
// needs.
package proxydial
