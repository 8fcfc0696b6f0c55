package grpcserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/grpcserver/servertest"
)

// grpcurlBin finds grpcurl: $GRPCURL, then PATH, then bin/tools of the
// repository (where test/all.sh puts the pinned tools). A missing binary
// fails the test: this proof must not be skipped silently.
func grpcurlBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("GRPCURL"); p != "" {
		return p
	}
	if p, err := exec.LookPath("grpcurl"); err == nil {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	if p := filepath.Join(filepath.Dir(file), "../../../bin/tools/grpcurl"); fileExists(p) {
		return p
	}
	t.Fatal("grpcurl not found: set GRPCURL=/path/to/grpcurl or put it on PATH; build it with\n" +
		"  go build -o /tmp/prototools/bin/grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3\n" +
		"(from a module that requires it, e.g. tools/go.mod: go build -modfile=tools/go.mod ...)")
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestGrpcurl drives a control plane on a real loopback listener with the
// grpcurl binary, as an operator would.
func TestGrpcurl(t *testing.T) {
	t.Parallel()
	bin := grpcurlBin(t)
	env := servertest.Start(t, servertest.Options{Listen: "127.0.0.1:0"})
	run := func(args ...string) (stdout, stderr string, err error) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"-plaintext"}, args...)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err = cmd.Run()
		return out.String(), errOut.String(), err
	}
	bearer := "authorization: Bearer " + servertest.AdminToken

	t.Run("list", func(t *testing.T) {
		out, errOut, err := run("-H", bearer, env.Addr, "list")
		if err != nil {
			t.Fatalf("grpcurl list: %v\n%s", err, errOut)
		}
		for _, svc := range []string{"selfhost.v1.AdminService", "selfhost.v1.ConfigDiscoveryService", "grpc.health.v1.Health"} {
			if !strings.Contains(out, svc) {
				t.Errorf("list misses %s:\n%s", svc, out)
			}
		}
	})
	t.Run("describe", func(t *testing.T) {
		out, errOut, err := run("-H", bearer, env.Addr, "describe", "selfhost.v1.AdminService")
		if err != nil {
			t.Fatalf("grpcurl describe: %v\n%s", err, errOut)
		}
		for _, rpc := range []string{"rpc PutUpstream", "rpc Resolve", "rpc InvalidateTag"} {
			if !strings.Contains(out, rpc) {
				t.Errorf("describe misses %q:\n%s", rpc, out)
			}
		}
	})
	t.Run("list with an edge token", func(t *testing.T) {
		out, errOut, err := run("-H", "authorization: Bearer "+servertest.EdgeToken("team-a"), env.Addr, "list")
		if err != nil || !strings.Contains(out, "grpc.health.v1.Health") {
			t.Fatalf("grpcurl list: %v\n%s%s", err, out, errOut)
		}
	})
	t.Run("list without a token refused", func(t *testing.T) {
		out, errOut, err := run(env.Addr, "list")
		if err == nil {
			t.Fatalf("reflection without a token succeeded:\n%s", out)
		}
		if !strings.Contains(errOut, "Unauthenticated") || !strings.Contains(errOut, "missing bearer token") {
			t.Errorf("stderr:\n%s", errOut)
		}
	})
	t.Run("health without a token", func(t *testing.T) {
		// Health is the one anonymous service, for probes; grpcurl needs
		// the token only to ask reflection for the schema.
		out, errOut, err := run("-reflect-header", bearer, env.Addr, "grpc.health.v1.Health/Check")
		if err != nil || !strings.Contains(out, "SERVING") {
			t.Fatalf("health check: %v\n%s%s", err, out, errOut)
		}
	})
	t.Run("authenticated call", func(t *testing.T) {
		out, errOut, err := run("-H", bearer, "-d", `{"namespace":"team-a","image":"nginx:1.25"}`, env.Addr, "selfhost.v1.AdminService/Resolve")
		if err != nil {
			t.Fatalf("grpcurl Resolve: %v\n%s", err, errOut)
		}
		var resp struct{ Rewritten, UpstreamURL string }
		if err := json.Unmarshal([]byte(out), &resp); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if resp.Rewritten != servertest.EdgeAddressA+"/dockerhub/library/nginx:1.25" {
			t.Errorf("rewritten = %q:\n%s", resp.Rewritten, out)
		}
	})
	t.Run("unauthenticated call refused", func(t *testing.T) {
		out, errOut, err := run("-reflect-header", bearer, env.Addr, "selfhost.v1.AdminService/ListUpstreams")
		if err == nil {
			t.Fatalf("call without a token succeeded:\n%s", out)
		}
		if !strings.Contains(errOut, "Code: Unauthenticated") || !strings.Contains(errOut, "missing bearer token") {
			t.Errorf("stderr:\n%s", errOut)
		}
	})
}
