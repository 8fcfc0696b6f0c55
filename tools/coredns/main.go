// Command coredns is CoreDNS v1.15.0 with only the plugins the test
// cluster of test/harness uses: the kubernetes plugin answers
// <svc>.<ns>.svc.cluster.local from the apiserver, the others keep it
// observable and fast. Linking every plugin (coredns.go upstream) would
// pull in the AWS, Azure and Google Cloud SDKs and roughly double the cold
// build; plugins not imported here are simply unknown directives.
package main

import (
	"github.com/coredns/coredns/coremain"

	// The server type and the plugins of the harness's Corefile.
	_ "github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"
)

func main() { coremain.Run() }
