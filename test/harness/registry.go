package harness

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// Registry is a running Debian docker-registry (distribution 2.8).
type Registry struct {
	// Addr is host:port, the registry part of an image reference.
	Addr string
	// URL is http://Addr.
	URL string
	// Root is the filesystem storage root.
	Root string
	// Proc is the server process.
	Proc *Process
}

// Stop stops the registry now (its cleanup is then a no-op); tests use it to
// take the upstream away.
func (r *Registry) Stop() { r.Proc.Stop() }

// StartDockerRegistry starts a docker-registry with filesystem storage in a
// temporary directory and deletes enabled.
func StartDockerRegistry(t testing.TB) *Registry {
	t.Helper()
	return startDockerRegistry(t, "docker-registry", "")
}

// StartDockerRegistryProxy starts a docker-registry in pull-through proxy
// mode for remoteURL: the peer the edge is benchmarked against.
func StartDockerRegistryProxy(t testing.TB, remoteURL string) *Registry {
	t.Helper()
	return startDockerRegistry(t, "docker-registry-proxy", remoteURL)
}

// registryConfig is docker-registry's YAML configuration. The access log is
// off because every request is already logged at info level. The health check
// of the storage driver is off: it only adds log noise in tests. Deletes are
// enabled on a plain registry so tests can take content away from the
// upstream; a proxy is pull-only and needs none.
func registryConfig(root string, port int, remoteURL string) string {
	deletes, proxy := "true", ""
	if remoteURL != "" {
		deletes, proxy = "false", fmt.Sprintf("proxy:\n  remoteurl: %s\n", remoteURL)
	}
	return fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: %s
http:
  addr: 127.0.0.1:%d
  secret: harness-not-a-secret
health:
  storagedriver:
    enabled: false
%s`, root, deletes, port, proxy)
}

func startDockerRegistry(t testing.TB, name, remoteURL string) *Registry {
	t.Helper()
	bin := dockerRegistryBin(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "storage")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatalf("create registry storage: %v", err)
	}
	var reg *Registry
	err := startWithPorts(1, func(ports []int) error {
		cfgPath := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfgPath, []byte(registryConfig(root, ports[0], remoteURL)), 0o644); err != nil {
			return fmt.Errorf("write registry config: %w", err)
		}
		p, err := startProcess(name, bin, []string{"serve", cfgPath}, nil, dir)
		if err != nil {
			return err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
		if err := waitReady(p, func(ctx context.Context) error { return httpStatus(ctx, "http://"+addr+"/v2/", http.StatusOK) }); err != nil {
			p.Stop()
			return portError(p, err)
		}
		reg = &Registry{Addr: addr, URL: "http://" + addr, Root: root, Proc: p}
		return nil
	})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	cleanupProcess(t, reg.Proc)
	return reg
}

// httpStatus GETs url and wants one of the given statuses.
func httpStatus(ctx context.Context, url string, want ...int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	for _, w := range want {
		if resp.StatusCode == w {
			return nil
		}
	}
	return fmt.Errorf("GET %s: status %d, want %v", url, resp.StatusCode, want)
}

// RegistryRequests counts the requests of method whose path starts with
// pathPrefix that the docker-registry running as p has answered so far,
// from its request log.
func RegistryRequests(t testing.TB, p *Process, method, pathPrefix string) int {
	t.Helper()
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		t.Fatalf("registry log: %v", err)
	}
	n := 0
	for line := range bytes.Lines(b) {
		if bytes.Contains(line, []byte(`http.request.uri="`+pathPrefix)) &&
			bytes.Contains(line, []byte(`http.request.method=`+method)) && bytes.Contains(line, []byte("response completed")) {
			n++
		}
	}
	return n
}
