package configclient_test

import (
	"context"
	"net"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/brokerstore/brokertest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/configclient"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/configclient/controltest"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// TestDialServicesSendsTheToken: calls on the services connection, unary
// and streaming, carry the stream's bearer token, read again per call.
func TestDialServicesSendsTheToken(t *testing.T) {
	t.Parallel()
	broker := brokertest.New(brokertest.NewFSStorage(t))
	lis := bufconn.Listen(1 << 20)
	controltest.Start(t, lis, broker.Register)
	dial := grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) })
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeToken(t, tokenFile, "tok-broker-1")
	h := newClient(t, dial, nil, configclient.WithTokenFile(tokenFile))
	conn, err := h.client.DialServices()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	api := selfhostv1.NewStorageBrokerServiceClient(conn)
	put := func() {
		t.Helper()
		st, err := api.PutObject(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		_ = st.Send(&selfhostv1.PutObjectRequest{Part: &selfhostv1.PutObjectRequest_Header{Header: &selfhostv1.PutObjectHeader{Key: "tenants/team-a/r"}}})
		if _, err := st.CloseAndRecv(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := api.Authorize(t.Context(), &selfhostv1.AuthorizeRequest{Key: "tenants/team-a/r"}); err != nil {
		t.Fatal(err)
	}
	put()
	writeToken(t, tokenFile, "tok-broker-2")
	if _, err := api.Authorize(t.Context(), &selfhostv1.AuthorizeRequest{Key: "tenants/team-a/r"}); err != nil {
		t.Fatal(err)
	}
	put()
	want := []string{"Bearer tok-broker-1", "Bearer tok-broker-1", "Bearer tok-broker-2", "Bearer tok-broker-2"}
	if got := broker.Tokens(); !slices.Equal(got, want) {
		t.Fatalf("authorization on the broker's calls = %q, want %q", got, want)
	}
}
