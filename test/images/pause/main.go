// Command pause is the sandbox ("pause") container of the test cluster
// started by test/harness: it holds the pod's namespaces open, reaps the
// zombies of processes that end up as its children, and exits on SIGTERM
// or SIGINT. The harness builds it statically (it uses no cgo package) and
// wraps it into an image itself because nothing can be pulled from the
// internet on the test machines.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every child that has exited, without blocking.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
