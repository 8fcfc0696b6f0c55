// Package proxy benchmarks pulls through Clash nodes (docs/edge-proxy.md): a
// large blob pulled cold through the edge via each node type, against the
// same proxy server used by its own client (ss-local, trojan's and v2ray's
// client modes, or curl's SOCKS5 and HTTP CONNECT support). It prints a
// table and never fails on a time. Run it with test/bench-proxy.sh; the
// test is behind the "bench" build tag so `go test ./...` skips it.
package proxy
