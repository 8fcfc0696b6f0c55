package clashnode

import (
	"io"
	"sync"

	"github.com/metacubex/mihomo/component/ca"
	"github.com/metacubex/mihomo/component/resolver"
	mihomolog "github.com/metacubex/mihomo/log"
	"github.com/sirupsen/logrus"
)

// setupOnce guards mihomo's process-wide settings: they are package
// variables of mihomo, read without locks, so they are written once,
// before the first node exists.
var setupOnce sync.Once

// Setup makes mihomo's process-wide settings, once per process; New,
// FromJSON, Parse and everything else that builds a node call it, so
// calling it from main only moves the work to start-up. It is the only
// place the repository touches mihomo's globals:
//
//   - Logging is silenced, in the edge and the control plane alike.
//     mihomo's log package takes over the global logrus logger at init
//     (stdout, debug level) and prints share links and connection details
//     with their secrets; its messages cannot be redacted, because they do
//     not say which node they are about, so they cannot go to slog either.
//     mihomo's own level goes to SILENT and logrus to io.Discard (nothing
//     else in the module uses logrus). What is worth logging about a node
//     the callers log themselves, with slog and a Redactor.
//   - Proxy server host names are resolved with /etc/hosts first
//     (resolver.UseSystemHosts), as every other program on the host does.
//   - IPv6 is enabled in the resolver: mihomo's default (DisableIPv6) makes
//     IPv6-literal and AAAA-only proxy servers undialable.
//   - The system CA pool is built now (ca.ResetCertificate) instead of
//     lazily on the first TLS node, which races when several TLS nodes
//     dial at once.
func Setup() {
	setupOnce.Do(func() {
		mihomolog.SetLevel(mihomolog.SILENT)
		logrus.SetOutput(io.Discard)
		logrus.SetLevel(logrus.PanicLevel)
		resolver.UseSystemHosts = true
		resolver.DisableIPv6 = false
		ca.ResetCertificate()
	})
}
