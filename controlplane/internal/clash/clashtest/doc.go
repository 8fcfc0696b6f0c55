// Package clashtest holds the HTTP servers and bodies a Clash control-plane
// test needs besides proxy servers: a probe target that answers like a
// registry's /v2/, a subscription server whose URL carries a secret token,
// and subscription bodies (Clash YAML, share links, base64). Each server
// belongs to the test that started it and is closed when it ends.
//
// The proxy servers themselves (ss-server, microsocks, tinyproxy, trojan,
// v2ray) are test/harness's StartShadowsocks, StartMicrosocks, ...: one
// set for the edge's and the control plane's tests.
package clashtest
