// Package proxydial dials upstream registries through Clash proxy nodes
// (docs/edge-proxy.md), with mihomo (github.com/metacubex/mihomo) as the
// protocol library.
//
// A Node is one Clash node built from its Clash map (ProxyNode.clash_json
// of the control protocol, or a --proxy flag value parsed by ParseNodes).
// A Dialer holds an ordered list of nodes and offers DialContext with the
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
// mihomo keeps process-wide state (its logger, resolver switches, a CA
// pool). Setup configures it and must be called once at start-up, before
// the first node is parsed; nothing in this package has init side effects
// of its own. Importing mihomo starts two goroutines at init that live for
// the whole process (common/observable.(*Observable).process for its log,
// tunnel/statistic.(*Manager).handle for its traffic counters); goroutine
// leak checkers must ignore them.
package proxydial
