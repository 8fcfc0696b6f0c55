// Package controlplane measures how the control plane distributes a
// configuration change (docs/control-protocol.md): the real controlplane binary
// in standalone mode, and N edges implemented in the benchmark process as
// real gRPC clients, each on its own grpc.ClientConn and so its own
// loopback TCP connection. Every client says hello and ACKs each snapshot
// the moment it arrives. For N = 100, 1 000 and 5 000 an admin call
// (PutUpstream, alternating an upstream URL) is repeated and the time until
// the last client has sent its ACK is measured, with the control plane's
// memory per connected edge and its CPU time per push, read from /proc.
//
// It is a report, not a test of speed: targets are shown and marked met or
// not, and the test fails only when a measurement cannot be made. The test
// files carry the "bench" build tag so that `go test ./...` never runs
// them; run test/bench-controlplane.sh, which prints the table.
package controlplane
