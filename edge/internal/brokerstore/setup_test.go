package brokerstore

import (
	"net"
	"net/http"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/brokerstore/brokertest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// fixture is a broker over a filesystem store with an HTTP server for its
// presigned URLs, served over loopback gRPC.
type fixture struct {
	*brokertest.Broker
	storage *brokertest.FSStorage
}

func startBroker(t *testing.T, opts ...Option) (*fixture, *Store) {
	t.Helper()
	storage := brokertest.NewFSStorage(t)
	b, s := serveBroker(t, storage, storage.Client(), opts...)
	return &fixture{Broker: b, storage: storage}, s
}

// serveBroker serves a broker over storage on loopback gRPC and returns a
// Store that reads presigned URLs with httpClient.
func serveBroker(t *testing.T, storage blob.PresigningStore, httpClient *http.Client, opts ...Option) (*brokertest.Broker, *Store) {
	t.Helper()
	b := brokertest.New(storage)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	b.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return b, New(selfhostv1.NewStorageBrokerServiceClient(conn), httpClient, opts...)
}

func refusal(code codes.Code, reason, msg string) error {
	st, _ := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "test"})
	return st.Err()
}
