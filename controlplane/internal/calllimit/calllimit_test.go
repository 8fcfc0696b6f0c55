package calllimit

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/auth"
)

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }

func TestStreamInterceptor(t *testing.T) {
	t.Parallel()
	refused := 0
	l := New(2, func() { refused++ })
	intercept := l.StreamInterceptor()
	edgeA := auth.WithIdentity(context.Background(), auth.Identity{Kind: auth.KindEdge, Namespace: "a", Name: "edge/a"})
	edgeB := auth.WithIdentity(context.Background(), auth.Identity{Kind: auth.KindEdge, Namespace: "b", Name: "edge/b"})
	anon := context.Background()

	// Each call parks its handler until release is closed.
	release := make(chan struct{})
	started := make(chan struct{}, 16)
	done := make(chan error, 16)
	open := func(ctx context.Context) {
		go func() {
			done <- intercept(nil, ctxStream{ctx: ctx}, &grpc.StreamServerInfo{}, func(any, grpc.ServerStream) error {
				started <- struct{}{}
				<-release
				return nil
			})
		}()
	}
	tests := []struct {
		name    string
		ctx     context.Context
		key     string
		refused bool
	}{
		{"edge a first", edgeA, "edge:edge/a", false},
		{"edge a second", edgeA, "edge:edge/a", false},
		{"edge a over", edgeA, "edge:edge/a", true},
		{"edge b unaffected", edgeB, "edge:edge/b", false},
		{"anonymous first", anon, Anonymous, false},
		{"anonymous second", anon, Anonymous, false},
		{"anonymous over", anon, Anonymous, true},
	}
	running := 0
	for _, tc := range tests {
		if got := Key(tc.ctx); got != tc.key {
			t.Fatalf("%s: key %q, want %q", tc.name, got, tc.key)
		}
		open(tc.ctx)
		if tc.refused {
			if err := <-done; status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("%s: %v, want ResourceExhausted", tc.name, err)
			}
			continue
		}
		<-started
		running++
	}
	if refused != 2 || l.Open("edge:edge/a") != 2 || l.Open(Anonymous) != 2 {
		t.Fatalf("refused %d, open a %d, anonymous %d", refused, l.Open("edge:edge/a"), l.Open(Anonymous))
	}
	close(release)
	for range running {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if l.Open("edge:edge/a") != 0 || l.Open(Anonymous) != 0 || len(l.open) != 0 {
		t.Fatalf("streams still counted after they ended: %v", l.open)
	}
	// Slots freed: a new stream is admitted.
	open(edgeA)
	<-started
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
