package testkit

import "testing"

// Integration marks a test that starts real servers or processes
// (docker-registry, versitygw, kube-apiserver, proxies, containerd, the
// built binaries). Under `go test -short` it skips the test, so that a
// contributor iterating on one package runs its unit tests in seconds
// without root or servers. Without -short it does nothing: a missing
// server then fails the test with its set-up hint, as always.
// test/all.sh refuses -short, so the full run skips nothing.
func Integration(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs the servers ./test/all.sh sets up; run without -short (see test/README.md)")
	}
}
