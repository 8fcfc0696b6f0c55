package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/control/controltest"
	s3store "github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/s3"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/s3/s3test"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

func TestCPStoragePrepare(t *testing.T) {
	t.Parallel()
	opens := 0
	c := newCPStorage(slog.New(slog.NewTextHandler(io.Discard, nil)))
	c.open = func(context.Context, *selfhostv1.S3Storage) (*s3store.Store, error) {
		opens++
		return &s3store.Store{}, nil
	}
	if _, err := c.prepare(nil); err == nil || !strings.HasPrefix(err.Error(), "storage: missing") {
		t.Fatalf("no storage: err = %v", err)
	}
	if _, err := c.Stat(t.Context(), "k"); !errors.Is(err, errNoStorage) {
		t.Fatalf("Stat before storage: %v", err)
	}
	s3 := &selfhostv1.S3Storage{Bucket: "edge-cache", AccessKeyId: "AKID", SecretAccessKey: "s1"}
	commit, err := c.prepare(&selfhostv1.StorageConfig{S3: s3})
	if err != nil {
		t.Fatal(err)
	}
	if c.ready() {
		t.Fatal("ready before commit")
	}
	commit()
	if !c.ready() || opens != 1 {
		t.Fatalf("after commit: ready %v, opens %d", c.ready(), opens)
	}
	// The same storage again (a new version for other reasons): nothing.
	commit, err = c.prepare(&selfhostv1.StorageConfig{S3: &selfhostv1.S3Storage{Bucket: "edge-cache", AccessKeyId: "AKID", SecretAccessKey: "s1"}})
	if err != nil {
		t.Fatal(err)
	}
	commit()
	if opens != 1 {
		t.Fatalf("same storage opened again (%d)", opens)
	}
	select {
	case <-c.changed:
		t.Fatal("changed closed for the same storage")
	default:
	}
	// A rotated secret is a change: the edge restarts.
	_, err = c.prepare(&selfhostv1.StorageConfig{S3: &selfhostv1.S3Storage{Bucket: "edge-cache", AccessKeyId: "AKID", SecretAccessKey: "s2"}})
	if err == nil || !strings.Contains(err.Error(), "storage: changed") || strings.Contains(err.Error(), "s2") {
		t.Fatalf("changed storage: err = %v", err)
	}
	select {
	case <-c.changed:
	default:
		t.Fatal("changed not closed")
	}
}

func TestStorageControlPlaneNeedsControlPlane(t *testing.T) {
	t.Parallel()
	err := Run(t.Context(), Config{Listen: "127.0.0.1:0", Storage: StorageControlPlane, Namespace: "team-a"},
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err == nil || !strings.Contains(err.Error(), "--control-plane") {
		t.Fatalf("err = %v", err)
	}
	if _, _, err := (Config{Storage: StorageControlPlane}).OpenStore(t.Context()); err == nil {
		t.Fatal("OpenStore opened control-plane storage from flags")
	}
}

// TestStorageFromControlPlane runs an edge with --storage=control-plane
// against a fake control plane and versitygw: not ready and 503 until a
// configuration brings storage.s3, a NACK for one without, pulls cached in
// the bucket, no credential in the state file, and an exit when the
// storage changes.
func TestStorageFromControlPlane(t *testing.T) {
	t.Parallel()
	endpoint, bucket, access, secret := s3test.Start(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp := controltest.Start(t, lis)
	stateDir := filepath.Join(t.TempDir(), "state")
	cfg := Config{
		Listen: "127.0.0.1:0", Storage: StorageControlPlane, Namespace: "team-a", TagTTL: time.Minute,
		ControlPlane: lis.Addr().String(), StateDir: stateDir, SpoolDir: t.TempDir(),
		StatsInterval: time.Hour, Version: "test",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(a string) { started <- a })
	}()
	addr := controltest.Next(t, started, wait)
	base := "http://" + addr + "/v2/test/org/app"
	controltest.Next(t, cp.Hellos, wait)

	if code, body, _ := get(t, "http://"+addr+"/readyz", ""); code != 503 || !strings.Contains(body, "waiting for storage") {
		t.Fatalf("readyz before storage: %d %s", code, body)
	}
	if code, body, _ := get(t, base+"/tags/list", ""); code != 503 || !strings.Contains(body, "UNAVAILABLE") {
		t.Fatalf("pull before storage: %d %s", code, body)
	}

	up := newUpstream(t, "v1")
	cp.SetConfig(snapshot("v1", up, nil))
	if ack := controltest.Next(t, cp.Acks, wait); ack.GetAccepted() || !strings.Contains(ack.GetErrorDetail(), "storage: missing") {
		t.Fatalf("config without storage: ack %v", ack)
	}

	withStorage := func(version, prefix string) *selfhostv1.EdgeConfig {
		c := snapshot(version, up, nil)
		c.Storage = &selfhostv1.StorageConfig{S3: &selfhostv1.S3Storage{Bucket: bucket, Prefix: prefix, Endpoint: endpoint,
			PathStyle: true, AccessKeyId: access, SecretAccessKey: secret}}
		return c
	}
	cp.SetConfig(withStorage("v2", "shared"))
	if ack := controltest.Next(t, cp.Acks, wait); !ack.GetAccepted() {
		t.Fatalf("config with storage: NACK %s", ack.GetErrorDetail())
	}
	if code, body, _ := get(t, "http://"+addr+"/readyz", ""); code != 200 || !strings.Contains(body, `"mode":"caching"`) {
		t.Fatalf("readyz with storage: %d %s", code, body)
	}
	if code, body, h := get(t, base+"/manifests/v1", ""); code != 200 || h.Get("X-Cache") != "MISS" {
		t.Fatalf("pull: %d %s", code, body)
	}
	eventually(t, "objects under the prefix in the bucket", func() bool {
		out, err := s3test.Client(endpoint, access, secret).ListObjectsV2(t.Context(),
			&awss3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("shared/")})
		return err == nil && len(out.Contents) > 0
	})
	data, err := os.ReadFile(filepath.Join(stateDir, "edge-config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), bucket) || strings.Contains(string(data), secret) || strings.Contains(string(data), access) {
		t.Fatalf("state file: want the bucket, not the credentials:\n%s", data)
	}

	// Another prefix: the edge exits so its pod restarts on the new storage.
	cp.SetConfig(withStorage("v3", "other"))
	select {
	case err := <-done:
		if !errors.Is(err, errStorageChanged) {
			t.Fatalf("Run after a storage change: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("edge kept running after the storage changed")
	}
}
