package proxydial

import (
	"io"

	"github.com/metacubex/mihomo/component/ca"
	"github.com/metacubex/mihomo/component/resolver"
	mihomolog "github.com/metacubex/mihomo/log"
	"github.com/sirupsen/logrus"
)

// Setup configures mihomo's process-wide state for use as a dialing
// library. It is the only place this repository touches mihomo globals;
// call it once from main (or TestMain) before any node is parsed and before
// goroutines that dial exist, because it writes variables mihomo reads
// without locks.
//
//   - mihomo's log package takes over the global logrus logger at init
//     (stdout, debug level) and prints every connection it makes; its
//     level is set to silent and logrus is sent to io.Discard. The edge
//     logs proxy events itself, with slog, and never a node's secrets.
//   - Proxy server host names are resolved with /etc/hosts first
//     (resolver.UseSystemHosts), as every other program on the host does.
//   - IPv6 is enabled in the resolver: mihomo's default (DisableIPv6) makes
//     IPv6-literal and AAAA-only proxy servers undialable.
//   - The system CA pool is built now (ca.ResetCertificate) instead of
//     lazily on the first TLS node, which races when several TLS nodes
//     dial at once.
func Setup() {
	mihomolog.SetLevel(mihomolog.SILENT)
	logrus.SetOutput(io.Discard)
	logrus.SetLevel(logrus.PanicLevel)
	resolver.UseSystemHosts = true
	resolver.DisableIPv6 = false
	ca.ResetCertificate()
}
