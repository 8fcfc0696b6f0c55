package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"testing"
)

// TokenProxy is a running upstreamtest/tokenproxy: a Docker-Hub-like Bearer
// token service in front of a registry (the anonymous token flow the edge's
// upstream client speaks). It runs as a separate process because test/ cannot
// import internal/upstream/upstreamtest.
type TokenProxy struct {
	// Addr is host:port; URL is http://Addr, the upstream URL to give the
	// edge.
	Addr, URL string
	// Proc is the proxy process.
	Proc *Process
}

// TokenProxyBinary returns the tokenproxy command: $HARNESS_TOKENPROXY_BIN
// or a build of ./internal/upstream/upstreamtest/tokenproxy.
func TokenProxyBinary(t testing.TB) string {
	t.Helper()
	return goBinary(t, "HARNESS_TOKENPROXY_BIN", "./internal/upstream/upstreamtest/tokenproxy")
}

var listeningOn = regexp.MustCompile(`listening on (127\.0\.0\.1:\d+)`)

// StartTokenProxy fronts backendURL with the token flow. args are extra
// flags of tokenproxy (-user u:p, -private repo, -token-ttl 1s).
func StartTokenProxy(t testing.TB, backendURL string, args ...string) *TokenProxy {
	t.Helper()
	bin := TokenProxyBinary(t)
	dir := t.TempDir()
	// Port 0: the proxy binds first and prints its address, so there is no
	// race for a port.
	p, err := startProcess("tokenproxy", bin, append([]string{"-listen", "127.0.0.1:0", "-backend", backendURL}, args...), nil, dir)
	if err != nil {
		t.Fatalf("start tokenproxy: %v", err)
	}
	cleanupProcess(t, p)
	tp := &TokenProxy{Proc: p}
	err = waitReady(p, func(ctx context.Context) error {
		if tp.Addr == "" {
			b, err := os.ReadFile(p.LogPath)
			if err != nil {
				return err
			}
			m := listeningOn.FindSubmatch(b)
			if m == nil {
				return fmt.Errorf("no listening line yet")
			}
			tp.Addr = string(m[1])
		}
		return httpStatus(ctx, "http://"+tp.Addr+"/v2/", 401)
	})
	if err != nil {
		t.Fatalf("tokenproxy: %v", err)
	}
	tp.URL = "http://" + tp.Addr
	return tp
}

// Stop takes the upstream away.
func (tp *TokenProxy) Stop() { tp.Proc.Stop() }

// TokensIssued returns how many tokens the proxy's token endpoint issued.
func (tp *TokenProxy) TokensIssued(t testing.TB) int {
	t.Helper()
	b, err := httpGet(context.Background(), tp.URL+"/_upstreamtest/stats")
	if err != nil {
		t.Fatalf("token stats: %v", err)
	}
	var v struct {
		Issued int `json:"tokens_issued"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("parse token stats %s: %v", b, err)
	}
	return v.Issued
}
