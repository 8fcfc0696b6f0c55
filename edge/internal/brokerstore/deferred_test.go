package brokerstore

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// attachedDeferred is a Deferred with a connection that is never used.
func attachedDeferred(t *testing.T) *Deferred {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///unused", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	d := NewDeferred(slog.New(slog.DiscardHandler), 0)
	d.Attach(conn)
	t.Cleanup(d.Close)
	return d
}

func TestDeferredPrepare(t *testing.T) {
	t.Parallel()
	s3 := &selfhostv1.S3Storage{Bucket: "edge-cache", AccessKeyId: "AKID", SecretAccessKey: "s3cr3t"}
	tests := []struct {
		name    string
		cfg     *selfhostv1.StorageConfig
		wantErr string // prefix; "" accepts
	}{
		{"none", nil, "storage: missing"},
		{"empty", &selfhostv1.StorageConfig{}, "storage: missing"},
		{"keys", &selfhostv1.StorageConfig{S3: s3}, "storage.s3: this edge no longer accepts storage credentials"},
		{"keys and brokered", &selfhostv1.StorageConfig{S3: s3, Brokered: &selfhostv1.BrokeredStorage{}}, "storage.s3:"},
		{"brokered", &selfhostv1.StorageConfig{Brokered: &selfhostv1.BrokeredStorage{}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := attachedDeferred(t)
			commit, err := d.Prepare(tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) || strings.Contains(err.Error(), "s3cr3t") {
					t.Fatalf("err = %v, want %q…", err, tc.wantErr)
				}
				if d.Ready() {
					t.Fatal("ready after a refused configuration")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Ready() {
				t.Fatal("ready before commit")
			}
			if _, err := d.Stat(t.Context(), "tenants/team-a/x"); !errors.Is(err, ErrNotConfigured) {
				t.Fatalf("Stat before commit: %v", err)
			}
			commit()
			commit() // a later configuration: nothing changes
			if !d.Ready() {
				t.Fatal("not ready after commit")
			}
		})
	}
}

// TestDeferredNotAttached: a Deferred opened by a configuration but never
// attached to a connection is not ready and serves nothing.
func TestDeferredNotAttached(t *testing.T) {
	t.Parallel()
	d := NewDeferred(slog.New(slog.DiscardHandler), 0)
	commit, err := d.Prepare(&selfhostv1.StorageConfig{Brokered: &selfhostv1.BrokeredStorage{}})
	if err != nil {
		t.Fatal(err)
	}
	commit()
	if d.Ready() {
		t.Fatal("ready without a connection")
	}
	if err := d.Delete(t.Context(), "tenants/team-a/x"); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("Delete: %v", err)
	}
	d.Close() // no connection: nothing to close
}
