package clash

import (
	"os"
	"sync"

	"github.com/metacubex/mihomo/component/ca"
	"github.com/metacubex/mihomo/component/resolver"
	mihomolog "github.com/metacubex/mihomo/log"
	"github.com/sirupsen/logrus"
)

var configureOnce sync.Once

// ConfigureMihomo makes mihomo's process-wide settings, once per process;
// every entry point of this package calls it, and calling it again does
// nothing. mihomo keeps its settings in package variables, so this is the
// one place this package touches globals:
//
//   - its log package takes over the global logrus logger at init (stdout,
//     debug level) and would print share links with their secrets: mihomo's
//     own level goes to SILENT and logrus gets its defaults back (stderr,
//     info, text) for any other user in the process;
//   - proxy server host names bypass /etc/hosts unless
//     resolver.UseSystemHosts is set;
//   - servers given as IPv6 literals need resolver.DisableIPv6 = false;
//   - the CA pool is built lazily, racing when the first TLS handshakes run
//     in parallel: ca.ResetCertificate builds it now.
//
// Importing mihomo also starts two goroutines at init (its log observable
// and a statistics ticker); goroutine-leak checks must ignore them.
func ConfigureMihomo() {
	configureOnce.Do(func() {
		mihomolog.SetLevel(mihomolog.SILENT)
		logrus.SetOutput(os.Stderr)
		logrus.SetLevel(logrus.InfoLevel)
		logrus.SetFormatter(&logrus.TextFormatter{})
		resolver.UseSystemHosts = true
		resolver.DisableIPv6 = false
		ca.ResetCertificate()
	})
}
