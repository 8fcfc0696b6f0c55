package harness

// Servers that run on a Cluster's node so that both kubelet (on the node's
// 127.0.0.1) and pods (on NodeIP) reach them: the test upstream registry
// behind its token proxy, and versitygw as the shared S3 store.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// NodeUpstream is Debian's docker-registry behind the Docker-Hub-like
// token proxy, both on the node, listening on every node address.
type NodeUpstream struct {
	// Host is NodeIP:PORT of the token proxy: what pods name in their image
	// references and what the control plane's upstream points at.
	Host string
	// URL is http://Host.
	URL string
	// RegistryAddr is NodeIP:PORT of the registry itself, for pushes from
	// the test (no token needed).
	RegistryAddr string
	// Registry and TokenProxy are the two processes.
	Registry, TokenProxy *Process
}

// StartUpstream starts the upstream on the node. tokenProxyArgs are extra
// tokenproxy flags (-user u:p, -private repo).
func (c *Cluster) StartUpstream(t testing.TB, tokenProxyArgs ...string) *NodeUpstream {
	t.Helper()
	dir := filepath.Join(c.Dir, fmt.Sprintf("upstream-%d", c.Netns.Port()))
	root := filepath.Join(dir, "storage")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatalf("upstream: %v", err)
	}
	regPort, proxyPort := c.Netns.Port(), c.Netns.Port()
	cfg := strings.Replace(registryConfig(root, regPort, ""), "addr: 127.0.0.1:", "addr: 0.0.0.0:", 1)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatalf("upstream: %v", err)
	}
	u := &NodeUpstream{
		RegistryAddr: fmt.Sprintf("%s:%d", c.NodeIP, regPort),
		Host:         fmt.Sprintf("%s:%d", c.NodeIP, proxyPort),
	}
	u.URL = "http://" + u.Host
	u.Registry = c.StartProcess(t, "upstream-registry", dockerRegistryBin(t), "serve", cfgPath)
	if err := waitReady(u.Registry, func(ctx context.Context) error {
		return httpStatus(ctx, "http://"+u.RegistryAddr+"/v2/", http.StatusOK)
	}); err != nil {
		t.Fatalf("upstream registry: %v", err)
	}
	args := append([]string{"-listen", fmt.Sprintf("0.0.0.0:%d", proxyPort), "-backend", fmt.Sprintf("http://127.0.0.1:%d", regPort)}, tokenProxyArgs...)
	u.TokenProxy = c.StartProcess(t, "upstream-tokenproxy", TokenProxyBinary(t), args...)
	if err := waitReady(u.TokenProxy, func(ctx context.Context) error {
		return httpStatus(ctx, u.URL+"/v2/", http.StatusUnauthorized)
	}); err != nil {
		t.Fatalf("upstream token proxy: %v", err)
	}
	return u
}

// Push pushes img to the upstream as repo:tag.
func (u *NodeUpstream) Push(t testing.TB, repo, tag string, img v1.Image) Image {
	t.Helper()
	im := pushImage(t, u.RegistryAddr, repo, tag, img)
	im.Registry = u.Host
	return im
}

// BlobGETs counts the GET requests for blobs of repo the upstream
// registry has answered so far (from its request log).
func (u *NodeUpstream) BlobGETs(t testing.TB, repo string) int {
	t.Helper()
	return RegistryRequests(t, u.Registry, "GET", "/v2/"+repo+"/blobs/")
}

// StartS3 starts versitygw on the node (every node address) with a fresh
// directory and one bucket; Endpoint is http://NodeIP:PORT, reachable
// from pods and from the test.
func (c *Cluster) StartS3(t testing.TB) *S3 {
	t.Helper()
	port := c.Netns.Port()
	data := filepath.Join(c.Dir, fmt.Sprintf("s3-%d", port))
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatalf("versitygw dir: %v", err)
	}
	s := &S3{Bucket: "cluster-cache", Access: "harness-" + randHex(t, 4), Secret: randHex(t, 20), Region: "us-east-1",
		Endpoint: fmt.Sprintf("http://%s:%d", c.NodeIP, port)}
	s.Proc = c.StartProcess(t, "versitygw", VersityGWBin(t), "--access", s.Access, "--secret", s.Secret,
		"--port", fmt.Sprintf("0.0.0.0:%d", port), "posix", data)
	if err := waitReady(s.Proc, func(ctx context.Context) error {
		return httpStatus(ctx, s.Endpoint+"/", http.StatusOK, http.StatusForbidden, http.StatusBadRequest)
	}); err != nil {
		t.Fatalf("versitygw: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Client().CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(s.Bucket)}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	return s
}
