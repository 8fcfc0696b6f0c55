package harness

// The peers the benchmark (test/bench/edge) compares the edge with, and what it
// reads of a running process. They live here because they need the
// unexported process helpers of this package.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Pid returns the process id of the process (not of its children).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// MemStatus returns a memory field of /proc/<pid>/status in bytes, e.g.
// "VmHWM" (peak resident set size) or "VmRSS". The kernel keeps VmHWM for
// the life of the process, so it is the true peak, not a sample.
func (p *Process) MemStatus(field string) (int64, error) {
	v, err := MemStatus(p.Pid(), field)
	if err != nil {
		return 0, fmt.Errorf("read memory of %s: %w", p.Name, err)
	}
	return v, nil
}

// MemStatus returns a memory field of /proc/<pid>/status in bytes, for any
// process (see Process.MemStatus).
func MemStatus(pid int, field string) (int64, error) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }() // read-only /proc file
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest) // "123456 kB"
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("%s: unexpected %s line %q", path, field, sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %s: %w", path, field, err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return 0, fmt.Errorf("%s has no %s field", path, field)
}

// Nginx is a running nginx serving a directory: the "serve the same file
// from disk" baseline of the benchmark.
type Nginx struct {
	// Addr is host:port; URL is http://Addr. A file <Root>/a/b is at
	// URL/a/b.
	Addr, URL, Root string
	Proc            *Process
}

// nginxConfig is the smallest configuration that serves root the way a
// tuned static file server does: sendfile, no access log, keep-alive.
// Workers run as the invoking user: nginx started by root would otherwise
// switch to "nobody", which cannot read test temp directories (mode 0700).
func nginxConfig(dir, root string, port int) string {
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n"
	}
	return fmt.Sprintf(`%sworker_processes auto;
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path %[2]s/client_body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    server {
        listen 127.0.0.1:%[4]d;
        root %[3]s;
    }
}
`, user, dir, root, port)
}

// StartNginx serves the directory root on a free 127.0.0.1 port.
func StartNginx(t testing.TB, root string) *Nginx {
	t.Helper()
	bin := Binary(t, "nginx", "NGINX", "apt-get install -y --no-install-recommends nginx-light")
	dir := t.TempDir()
	var n *Nginx
	err := startWithPorts(1, func(ports []int) error {
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(nginxConfig(dir, root, ports[0])), 0o644); err != nil {
			return fmt.Errorf("write nginx config: %w", err)
		}
		// -e: the compiled-in error log (/var/log/nginx) is opened before
		// the configuration is read.
		p, err := startProcess("nginx", bin, []string{"-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log")}, nil, dir)
		if err != nil {
			return err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
		err = waitReady(p, func(ctx context.Context) error {
			return httpStatus(ctx, "http://"+addr+"/", http.StatusOK, http.StatusForbidden, http.StatusNotFound)
		})
		if err != nil {
			p.Stop()
			return portError(p, err)
		}
		n = &Nginx{Addr: addr, URL: "http://" + addr, Root: root, Proc: p}
		return nil
	})
	if err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	cleanupProcess(t, n.Proc)
	return n
}

// StartDockerRegistryS3Proxy starts a docker-registry in pull-through proxy
// mode for remoteURL whose storage is bucket (created when missing) of s,
// under rootDir (e.g. "/regproxy"). Blob downloads are streamed by the
// registry itself (storage redirects off), as the edge streams them.
//
// It returns an error instead of failing the test: the benchmark reports a
// peer that cannot run here in its table rather than aborting.
func StartDockerRegistryS3Proxy(t testing.TB, remoteURL string, s *S3, bucket, rootDir string) (*Registry, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := s.Client().CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(bucket)})
	var owned *types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		return nil, fmt.Errorf("create bucket %s: %w", bucket, err)
	}
	bin, err := findBinary("docker-registry", "DOCKER_REGISTRY")
	if err != nil {
		return nil, err
	}
	dir := t.TempDir()
	var reg *Registry
	err = startWithPorts(1, func(ports []int) error {
		cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: %s
    secretkey: %s
    region: %s
    regionendpoint: %s
    bucket: %s
    rootdirectory: %s
    secure: false
    v4auth: true
  redirect:
    disable: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:%d
  secret: harness-not-a-secret
health:
  storagedriver:
    enabled: false
proxy:
  remoteurl: %s
`, s.Access, s.Secret, s.Region, s.Endpoint, bucket, rootDir, ports[0], remoteURL)
		cfgPath := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			return fmt.Errorf("write registry config: %w", err)
		}
		// The child environment never has AWS_CA_BUNDLE (scrubbedEnv):
		// the registry's S3 driver panics when it is set.
		p, err := startProcess("docker-registry-s3-proxy", bin, []string{"serve", cfgPath}, nil, dir)
		if err != nil {
			return err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
		if err := waitReady(p, func(ctx context.Context) error { return httpStatus(ctx, "http://"+addr+"/v2/", http.StatusOK) }); err != nil {
			p.Stop()
			return portError(p, err)
		}
		reg = &Registry{Addr: addr, URL: "http://" + addr, Proc: p}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("start docker-registry with S3 storage: %w", err)
	}
	cleanupProcess(t, reg.Proc)
	return reg, nil
}
