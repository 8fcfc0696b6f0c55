// Package e2e tests the edge binary end to end: real clients (skopeo, crane,
// containerd through the CRI, exactly what kubelet does) pull through a real
// edge process from a real upstream (Debian's docker-registry behind a
// Docker-Hub-like Bearer token service), with the cache on a real
// filesystem and on a real S3 server (versitygw). Every server is started by
// the tests themselves on 127.0.0.1; see test/harness.
package e2e
