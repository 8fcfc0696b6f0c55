package server

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/brokerstore/brokertest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/configclient/controltest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/blobtest"
	s3store "github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/s3"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/s3/s3test"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream/upstreamtest"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

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

// TestBrokeredStorage runs an edge with --storage=control-plane against a
// fake control plane whose storage broker stores in versitygw and hands out
// real presigned GETs: not ready and 503 until a configuration brings
// storage.brokered, a NACK naming storage.s3 for one carrying keys, a cold
// pull stored in the bucket through the broker, a warm one read back by
// presigned URL, the edge's token on every broker call, and a refusal by
// the broker served from the upstream without degrading the storage.
func TestBrokeredStorage(t *testing.T) {
	t.Parallel()
	endpoint, bucket, access, secret := s3test.Start(t)
	s3c := s3test.Client(endpoint, access, secret)
	shared, err := s3store.New(s3c, bucket, "shared")
	if err != nil {
		t.Fatal(err)
	}
	broker := brokertest.New(shared)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp := controltest.Start(t, lis, broker.Register)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("edge-token-b7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, stop := startEdge(t, Config{
		Listen: "127.0.0.1:0", Storage: StorageControlPlane, Namespace: "team-a", TagTTL: time.Minute,
		ControlPlane: lis.Addr().String(), ControlPlaneTokenFile: tokenFile, StateDir: t.TempDir(), SpoolDir: t.TempDir(),
		StatsInterval: time.Hour, Version: "test",
	})
	defer stop()
	base := "http://" + addr + "/v2/test/org/app"
	controltest.Next(t, cp.Hellos, wait)

	if code, body, _ := get(t, "http://"+addr+"/readyz", ""); code != 503 || !strings.Contains(body, "waiting for storage") {
		t.Fatalf("readyz before storage: %d %s", code, body)
	}
	if code, body, _ := get(t, base+"/tags/list", ""); code != 503 || !strings.Contains(body, "UNAVAILABLE") {
		t.Fatalf("pull before storage: %d %s", code, body)
	}

	reg := upstreamtest.NewRegistry()
	layer := blobtest.Content(600<<10, 7)
	ld := reg.PutBlob("org/app", layer)
	md := reg.PutManifest("org/app", "v1", oci.MediaTypeOCIManifest, []byte(`{"schemaVersion":2,"layers":[{"digest":"`+ld.String()+`"}]}`))
	up := httptest.NewServer(reg)
	t.Cleanup(up.Close)

	cp.SetConfig(snapshot("v1", up.URL, nil))
	if ack := controltest.Next(t, cp.Acks, wait); ack.GetAccepted() || !strings.Contains(ack.GetErrorDetail(), "storage: missing") {
		t.Fatalf("config without storage: ack %v", ack)
	}
	withKeys := snapshot("v2", up.URL, nil)
	withKeys.Storage = &selfhostv1.StorageConfig{S3: &selfhostv1.S3Storage{Bucket: bucket, Endpoint: endpoint, PathStyle: true,
		AccessKeyId: access, SecretAccessKey: secret}}
	cp.SetConfig(withKeys)
	if ack := controltest.Next(t, cp.Acks, wait); ack.GetAccepted() || !strings.Contains(ack.GetErrorDetail(), "storage.s3: this edge no longer accepts storage credentials") {
		t.Fatalf("config with storage keys: ack %v", ack)
	}
	if st := ready(t, addr); st.Ready {
		t.Fatalf("ready after a NACKed configuration: %+v", st)
	}

	brokered := snapshot("v3", up.URL, nil)
	brokered.Storage = &selfhostv1.StorageConfig{Brokered: &selfhostv1.BrokeredStorage{}}
	cp.SetConfig(brokered)
	if ack := controltest.Next(t, cp.Acks, wait); !ack.GetAccepted() {
		t.Fatalf("brokered config: NACK %s", ack.GetErrorDetail())
	}
	if st := ready(t, addr); !st.Ready || st.Storage != "brokered" || st.StorageStatus != "ok" {
		t.Fatalf("readyz with brokered storage: %+v", st)
	}

	// Cold: from the upstream, stored in the bucket through the broker.
	if code, body, h := get(t, base+"/manifests/v1", ""); code != 200 || h.Get("X-Cache") != "MISS" {
		t.Fatalf("cold manifest: %d %s", code, body)
	}
	if code, body, h := get(t, base+"/blobs/"+ld.String(), ""); code != 200 || body != string(layer) || h.Get("X-Cache") != "MISS" {
		t.Fatalf("cold blob: %d, %d bytes", code, len(body))
	}
	for _, key := range []string{blob.ManifestKey(md), blob.BlobKey(ld)} {
		testkit.WaitFor(t, key+" in the bucket", wait, func() bool {
			_, err := s3c.HeadObject(t.Context(), &awss3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("shared/" + key)})
			return err == nil
		})
	}
	// Warm: read back by presigned URL, ranges included.
	gets := reg.Hits(http.MethodGet, "/v2/org/app/blobs/"+ld.String())
	if code, body, h := get(t, base+"/blobs/"+ld.String(), ""); code != 200 || body != string(layer) || h.Get("X-Cache") != "HIT" {
		t.Fatalf("warm blob: %d, %d bytes, %s", code, len(body), h.Get("X-Cache"))
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/blobs/"+ld.String(), nil)
	req.Header.Set("Range", "bytes=1000-1999")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || string(part) != string(layer[1000:2000]) {
		t.Fatalf("warm range: %d, %d bytes", resp.StatusCode, len(part))
	}
	if n := reg.Hits(http.MethodGet, "/v2/org/app/blobs/"+ld.String()); n != gets {
		t.Fatalf("warm reads went upstream (%d GETs, was %d)", n, gets)
	}
	for _, tok := range broker.Tokens() {
		if tok != "Bearer edge-token-b7" {
			t.Fatalf("a broker call carried authorization %q", tok)
		}
	}
	for _, s := range broker.Scopes() {
		if s != "" && s != "test/org/app" {
			t.Fatalf("a broker call in scope %q", s)
		}
	}
	if !slices.Contains(broker.Scopes(), "test/org/app") {
		t.Fatalf("scopes seen by the broker: %q", broker.Scopes())
	}

	// Refused: the same stored blob wanted in a repository the namespace
	// has proven nothing for. The pull still works, from the upstream, and
	// the storage is not degraded.
	broker.Deny("test", "org/other")
	reg.PutBlob("org/other", layer)
	other := "http://" + addr + "/v2/test/org/other/blobs/" + ld.String()
	for i := range 2 {
		if code, body, h := get(t, other, ""); code != 200 || body != string(layer) || h.Get("X-Cache") != "MISS" {
			t.Fatalf("refused blob, pull %d: %d, %d bytes, %s", i, code, len(body), h.Get("X-Cache"))
		}
	}
	if n := reg.Hits(http.MethodGet, "/v2/org/other/blobs/"+ld.String()); n != 2 {
		t.Fatalf("refused blob: %d upstream GETs, want 2", n)
	}
	if st := ready(t, addr); !st.Ready || st.StorageStatus != "ok" {
		t.Fatalf("readyz after refusals: %+v", st)
	}
	_, metrics, _ := get(t, "http://"+addr+"/metrics", "")
	if !strings.Contains(metrics, `edge_storage_denied_total{op="stat"}`) || !strings.Contains(metrics, "edge_storage_degraded 0") {
		t.Fatalf("metrics after refusals:\n%s", storageMetricLines(metrics, "edge_storage"))
	}
}

func storageMetricLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return fmt.Sprint(out)
}
