// Package s3test starts a real S3 server (versitygw with its posix backend)
// for tests. The binary comes from $VERSITYGW or from PATH; a missing
// binary fails the test, because an S3 store that was never run against S3
// is not tested.
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

// Bucket is the bucket Start creates.
const Bucket = "test-bucket"

const startTimeout = 15 * time.Second

// Start runs versitygw on a free loopback port with a fresh directory, creates
// Bucket, and stops the server when the test ends. Under go test -short
// it skips the test (testkit.Integration). It returns the endpoint
// URL ("http://127.0.0.1:PORT"), the bucket and the root credentials.
func Start(t testing.TB) (endpoint, bucket, access, secret string) {
	t.Helper()
	// A test that starts a real S3 server is an integration test.
	testkit.Integration(t)
	bin := binary(t)
	access, secret = "test-"+randHex(t, 6), randHex(t, 20)
	var lastErr error
	// A port picked free can be taken again before the server binds it;
	// retry with another.
	for range 3 {
		endpoint, lastErr = start(t, bin, access, secret)
		if lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("s3test: %v", lastErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	_, err := Client(endpoint, access, secret).CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(Bucket)})
	if err != nil {
		t.Fatalf("s3test: create bucket: %v", err)
	}
	return endpoint, Bucket, access, secret
}

// Client returns an SDK client for endpoint with static credentials. It
// reads nothing from the environment: this machine's AWS_CA_BUNDLE and any
// shared AWS configuration must not leak into tests.
func Client(endpoint, access, secret string) *awss3.Client {
	return awss3.New(awss3.Options{
		BaseEndpoint:               aws.String(endpoint),
		Region:                     "us-east-1",
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(access, secret, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

func binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("VERSITYGW"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("s3test: VERSITYGW=%s: %v", p, err)
		}
		return p
	}
	p, err := exec.LookPath("versitygw")
	if err != nil {
		t.Fatalf("s3test: versitygw not found: set VERSITYGW to its path or put it on PATH " +
			"(build it: cd tools && go build -o /tmp/toolbin/versitygw github.com/versity/versitygw/cmd/versitygw)")
	}
	return p
}

// start runs one attempt; an error means the server did not come up.
func start(t testing.TB, bin, access, secret string) (string, error) {
	port, err := testkit.FreePortErr()
	if err != nil {
		return "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dir := t.TempDir()
	cmd := exec.Command(bin, "--quiet", "--access", access, "--secret", secret, "--port", addr, "posix", dir)
	cmd.Env = childEnv()
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	endpoint := "http://" + addr
	if err := waitReady(endpoint, exited); err != nil {
		stop()
		return "", fmt.Errorf("versitygw on %s: %w; output:\n%s", addr, err, out.String())
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("versitygw output:\n%s", out.String())
		}
	})
	return endpoint, nil
}

// childEnv is the environment without the variables that change how
// versitygw or an AWS client configures itself.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "AWS_") || strings.HasPrefix(name, "VGW_") || strings.HasPrefix(name, "ROOT_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// waitReady polls until the server answers HTTP at all (an unsigned request
// gets an S3 error, which is an answer).
func waitReady(endpoint string, exited <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second}
	// The poll ends early when the server exits: it will not answer.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go func() {
		select {
		case <-exited:
			cancel(errors.New("exited before answering"))
		case <-ctx.Done():
		}
	}()
	return testkit.Poll(ctx, startTimeout, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
