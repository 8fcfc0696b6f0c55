package configclient_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/cache"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/configclient"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/configclient/controltest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/blobtest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

// TestRestoreWithControlPlaneDown: an edge restarted while the control
// plane is down applies its persisted configuration, keeps trying, and
// reports the restored version once the control plane is back.
func TestRestoreWithControlPlaneDown(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var n switchNet
		srv := n.start(t)
		state := t.TempDir()
		first := startClient(t, n.dial(), nil, configclient.WithStateDir(state))
		srv.SetConfig(edgeConfig("v1"))
		controltest.Next(t, srv.Acks, wait)
		first.stop()
		srv.Stop()

		second := newClient(t, n.dial(), nil, configclient.WithStateDir(state))
		v, err := second.client.Restore()
		if err != nil || v != "v1" {
			t.Fatalf("Restore = %q, %v", v, err)
		}
		if second.applier.current() != "v1" {
			t.Fatalf("applied %q", second.applier.current())
		}
		applied := second.applier.applied[0]
		if applied.GetUpstreams()[0].GetCredentials().GetPassword() != "upstream-secret" || applied.GetPolicy().GetPullToken() != "pull-secret" {
			t.Fatalf("restored config lost its secrets: %v", applied)
		}
		second.run(t)
		// On the bubble's fake clock: several failed attempts (backoff
		// 10–50 ms) have run and settled when the sleep returns.
		time.Sleep(time.Second)
		if st := second.client.Status(); st.Connected || st.Version != "v1" {
			t.Fatalf("status while down %+v", st)
		}
		if !strings.Contains(second.logs.String(), "reconnecting") {
			t.Fatalf("no failed attempt while down:\n%s", second.logs.String())
		}

		srv2 := n.start(t)
		hello := controltest.Next(t, srv2.Hellos, wait)
		if hello.Msg.GetLastAppliedVersion() != "v1" {
			t.Fatalf("hello after restart %v", hello.Msg)
		}
		srv2.SetConfig(edgeConfig("v1"))
		if ack := controltest.Next(t, srv2.Acks, wait); !ack.GetAccepted() {
			t.Fatalf("ack %v", ack)
		}
		testkit.WaitFor(t, "connected", wait, func() bool { return second.client.Status().Connected })
		if second.applier.count() != 1 {
			t.Fatalf("v1 applied %d times, want once (restore only)", second.applier.count())
		}
	})
}

func TestRestoreNothingOrCorrupt(t *testing.T) {
	t.Parallel()
	_, dial := controltest.StartBufconn(t)
	empty := newClient(t, dial, nil, configclient.WithStateDir(t.TempDir()))
	if v, err := empty.client.Restore(); v != "" || err != nil {
		t.Fatalf("empty dir: %q, %v", v, err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "edge-config.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	corrupt := newClient(t, dial, nil, configclient.WithStateDir(dir))
	if _, err := corrupt.client.Restore(); err == nil || corrupt.applier.count() != 0 {
		t.Fatalf("corrupt file: err %v, applied %d", err, corrupt.applier.count())
	}
}

// TestReconnectBackoff: a control plane that breaks every stream is retried
// with growing, jittered delays — never in a hot loop.
func TestReconnectBackoff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		srv, dial := controltest.StartBufconn(t)
		srv.RejectStreams(errors.New("broken"))
		h := startClient(t, dial, nil, configclient.WithBackoff(20*time.Millisecond, 100*time.Millisecond))
		// A second on the bubble's fake clock. Full jitter over
		// [0, 20·2^n ms] capped at 100 ms averages ~50 ms per attempt once
		// capped: about 20 in a second. A hot loop would never let the fake
		// clock reach the second (go test's -timeout reports it) or make
		// far more attempts.
		time.Sleep(time.Second)
		if n := srv.Streams.Load(); n < 4 || n > 60 {
			t.Fatalf("%d stream attempts in 1s, want between 4 and 60", n)
		}
		// Accepting again: the client connects and applies.
		srv.RejectStreams(nil)
		srv.SetConfig(edgeConfig("v1"))
		if ack := controltest.Next(t, srv.Acks, wait); !ack.GetAccepted() {
			t.Fatalf("ack %v", ack)
		}
		if !strings.Contains(h.logs.String(), "reconnecting") {
			t.Fatalf("no reconnect logged:\n%s", h.logs.String())
		}
	})
}

func TestStatsSent(t *testing.T) {
	t.Parallel()
	srv, dial := controltest.StartBufconn(t)
	startClient(t, dial, nil, configclient.WithStatsInterval(20*time.Millisecond))
	got := controltest.Next(t, srv.Stats, wait)
	if !proto.Equal(got, fixedStats{}.Stats()) {
		t.Fatalf("stats %v", got)
	}
	controltest.Next(t, srv.Stats, wait) // and again, periodically
}

func TestInvalidateTag(t *testing.T) {
	t.Parallel()
	srv, dial := controltest.StartBufconn(t)
	mem := blobtest.NewMemory()
	c, err := cache.New(mem, namespace, metrics.New(), cache.WithSpoolDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key, _ := blob.TagKey(namespace, "test", "library/app", "latest")
	keep, _ := blob.TagKey(namespace, "test", "library/app", "v1")
	for _, k := range []string{key, keep} {
		if err := mem.Put(ctx, k, []byte(`{"digest":"sha256:00"}`), "application/json"); err != nil {
			t.Fatal(err)
		}
	}
	startClient(t, dial, c)
	srv.SetConfig(edgeConfig("v1"))
	controltest.Next(t, srv.Acks, wait)
	srv.InvalidateTag("test", "library/app", "latest")
	testkit.WaitFor(t, "tag record deleted", wait, func() bool {
		_, err := mem.Stat(ctx, key)
		return errors.Is(err, blob.ErrNotFound)
	})
	if _, err := mem.Stat(ctx, keep); err != nil {
		t.Fatalf("other tag deleted: %v", err)
	}
}

// TestUnauthenticatedRetries: a rejected token is logged as an error
// (without the token) and retried with backoff; a rotated token file is
// read on the next attempt.
func TestUnauthenticatedRetries(t *testing.T) {
	t.Parallel()
	srv, dial := controltest.StartBufconn(t)
	srv.RequireTokens("tok-NEW-3c9a")
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeToken(t, tokenFile, "tok-OLD-7e21")
	srv.SetConfig(edgeConfig("v1"))
	h := startClient(t, dial, nil, configclient.WithTokenFile(tokenFile), configclient.WithBackoff(20*time.Millisecond, 100*time.Millisecond))

	for i := 0; i < 3; i++ {
		if hello := controltest.Next(t, srv.Hellos, wait); hello.Token != "tok-OLD-7e21" {
			t.Fatalf("attempt %d token %q", i, hello.Token)
		}
	}
	if st := h.client.Status(); st.Connected || st.Version != "" || h.applier.count() != 0 {
		t.Fatalf("rejected edge: status %+v, applied %d", st, h.applier.count())
	}
	writeToken(t, tokenFile, "tok-NEW-3c9a")
	if ack := controltest.Next(t, srv.Acks, wait); !ack.GetAccepted() || ack.GetVersion() != "v1" {
		t.Fatalf("ack after rotation %v", ack)
	}
	testkit.WaitFor(t, "connected", wait, func() bool { return h.client.Status().Connected })
	h.stop()
	logs := h.logs.String()
	if !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "rejected the edge's credentials") || !strings.Contains(logs, "Unauthenticated") {
		t.Fatalf("rejection not logged as an error:\n%s", logs)
	}
	if strings.Contains(logs, "tok-OLD") || strings.Contains(logs, "tok-NEW") {
		t.Fatalf("token in logs:\n%s", logs)
	}
	// Backoff, not a hot loop, while rejected.
	if n := srv.Streams.Load(); n > 200 {
		t.Fatalf("%d attempts", n)
	}
}

func TestMissingTokenFileRetries(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		srv, dial := controltest.StartBufconn(t)
		tokenFile := filepath.Join(t.TempDir(), "token")
		startClient(t, dial, nil, configclient.WithTokenFile(tokenFile))
		// A second on the bubble's fake clock: the client has looked for
		// the token many times (backoff 10–50 ms) and opened nothing.
		time.Sleep(time.Second)
		if n := srv.Streams.Load(); n != 0 {
			t.Fatalf("%d streams opened without a token", n)
		}
		writeToken(t, tokenFile, "tok-late")
		if hello := controltest.Next(t, srv.Hellos, wait); hello.Token != "tok-late" {
			t.Fatalf("token %q", hello.Token)
		}
	})
}
