// Package edge measures the edge against its peers on the same machine in
// the same run and prints a table of ratios (CONTRIBUTING.md, "Benchmarks"): warm blobs
// from the filesystem store against nginx serving the same file, warm blobs
// from the S3 store against a direct GetObject of the same object, cold
// blobs against pulling the upstream directly, all three against Debian's
// docker-registry in proxy mode, 100 concurrent cold clients (upstream
// fetches and wall time), the edge's peak RSS under 16 concurrent cold
// 1 GiB pulls, and manifest hit latency at a fixed request rate.
//
// It is a report, not a test of speed: targets are shown and marked met or
// not, and the test only fails when a measurement cannot be made. The
// files carry the "bench" build tag so that `go test ./...` never runs it;
// run test/bench.sh, which prints the table at the end.
package edge
