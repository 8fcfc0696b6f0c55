// Package upstream is the client the edge (and the control plane) uses to
// fetch manifests, blobs and tag lists from one upstream registry (Docker
// Hub, ghcr.io, a private registry, …).
//
// # Transport stack
//
// A request made by Client goes through, from the top:
//
//	http.Client            follows redirects (blob → object storage), at most 10
//	ggcr auth transport    per repository: Bearer (token per scope, refreshed on 401) or Basic
//	edge transport         pins the configured scheme, sets User-Agent
//	retry transport        GET/HEAD only: connection errors, 502/503/504, 429 with Retry-After
//	http.Transport         DialContext = the pluggable dialer (direct, or a Clash node)
//
// The auth layer comes from go-containerregistry's remote/transport
// (transport.NewWithContext): it pings /v2/, parses the WWW-Authenticate
// challenge, exchanges (optional) credentials for a token scoped to
// repository:<name>:pull and only ever attaches Authorization to requests
// for the registry's own host, so a redirect to object storage never carries
// the token. One authenticated transport is kept per repository in a small
// bounded LRU owned by the Client, which is what "tokens cached per scope"
// means here; ggcr refreshes an expired token when the registry answers 401.
//
// Retries sit beneath the auth layer, as the base RoundTripper handed to
// ggcr, for three reasons: the ping and the token requests are retried too;
// ggcr's own 401 → refresh → resend stays a single logical attempt; and a
// RoundTripper returns as soon as the response headers arrive, so a blob
// body is never retried once the caller holds it. A broken body stream is
// the caller's (the cache's) to handle; it surfaces as ErrUnavailable.
// Manifests and tag lists are small and read whole here, so a body that
// breaks mid-read is fetched again.
//
// The edge transport forces the scheme of the configured URL for requests
// to the registry host. ggcr races https against http for "insecure"
// registries and falls back to plain http for loopback and RFC 1918 hosts;
// pinning makes an http:// upstream take one plain request and guarantees
// that an https:// upstream is never downgraded.
//
// # Errors
//
// Every error names the operation and the reference
// ("fetch manifest registry-1.docker.io/library/nginx:latest: …"), never a
// credential or token. errors.Is works with ErrNotFound, ErrUnauthorized,
// ErrDenied, ErrTooManyRequests, ErrDigestMismatch, ErrTooLarge and
// ErrUnavailable; *StatusError carries the status, the first OCI error code
// and Retry-After. IsUnavailable tells the cache when to serve stale content.
//
// A Client holds one set of credentials. Pulling with another identity (a
// namespace's own credentials) means another Client for the same Registry.
package upstream
