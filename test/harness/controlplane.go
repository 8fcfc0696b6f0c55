package harness

// The control plane (controlplane/cmd/controlplane --standalone) as a real
// process, grpcurl as the operator's client, and what a test reads of an
// edge that takes its configuration from the control plane (/readyz).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

// ControlPlaneBinary returns the control plane: $HARNESS_CONTROLPLANE_BIN
// (test/all.sh builds it once) or a build of ./controlplane/cmd/controlplane
// made once per test binary. Like the edge, it is a plain build, not -race.
func ControlPlaneBinary(t testing.TB) string {
	t.Helper()
	return goBinary(t, "HARNESS_CONTROLPLANE_BIN", "./controlplane/cmd/controlplane")
}

// GrpcurlBin is the grpcurl binary (env GRPCURL, PATH, bin/tools).
func GrpcurlBin(t testing.TB) string { return Binary(t, "grpcurl", "GRPCURL", hintTools) }

// ControlPlane is a running standalone control plane. Its configuration
// file and its state file (controlplane-state.json) live in Dir, so a
// restart finds the runtime changes of the previous process, as in
// production.
type ControlPlane struct {
	// Addr is the gRPC address, 127.0.0.1:port; it stays the same across
	// Kill/Start and Restart because the edges are configured with it.
	Addr string
	// WebhookAddr is the injector's HTTPS address (in-cluster mode only).
	WebhookAddr string
	// HTTPAddr serves /healthz, /readyz and /metrics (in-cluster mode
	// only; "" standalone).
	HTTPAddr string
	// Dir holds ConfigPath and the state file.
	Dir        string
	ConfigPath string
	// Proc is the current process (Start and Restart replace it).
	Proc *Process

	bin  string
	args []string
}

// StartControlPlane writes configYAML to a fresh directory and starts the
// control plane in standalone mode with it. args are extra flags (e.g.
// --debounce 0); --standalone, --config and --grpc-listen are set here.
func StartControlPlane(t testing.TB, configYAML string, args ...string) *ControlPlane {
	t.Helper()
	c := &ControlPlane{bin: ControlPlaneBinary(t), Dir: t.TempDir()}
	c.ConfigPath = filepath.Join(c.Dir, "controlplane.yaml")
	// 0600: the file holds tokens and upstream passwords.
	if err := os.WriteFile(c.ConfigPath, []byte(configYAML), 0o600); err != nil {
		t.Fatalf("write control plane config: %v", err)
	}
	err := startWithPorts(1, func(ports []int) error {
		c.Addr = fmt.Sprintf("127.0.0.1:%d", ports[0])
		c.args = append([]string{"--standalone", "--config", c.ConfigPath, "--grpc-listen", c.Addr}, args...)
		return c.start()
	})
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	c.stopOnCleanup(t, "controlplane")
	return c
}

// stopOnCleanup stops the current process when the test ends and, when it
// failed, logs the tail of the process's log under name.
func (c *ControlPlane) stopOnCleanup(t testing.TB, name string) {
	t.Cleanup(func() {
		c.Proc.Stop()
		if t.Failed() {
			t.Logf("---- log of %s %s, last 64 KiB ----\n%s\n---- end of %s log ----", name, c.Addr, c.Proc.LogTail(64<<10), name)
		}
	})
}

func (c *ControlPlane) start() error {
	p, err := startProcess("controlplane", c.bin, c.args, nil, c.Dir)
	if err != nil {
		return err
	}
	if err := waitReady(p, c.healthy); err != nil {
		p.Stop()
		return portError(p, err)
	}
	c.Proc = p
	return nil
}

// healthy asks /readyz when there is an HTTP port, else grpc.health.v1
// (no token needed) for SERVING.
func (c *ControlPlane) healthy(ctx context.Context) error {
	if c.HTTPAddr != "" {
		return c.ready(ctx)
	}
	conn, err := grpc.NewClient(c.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health: %s", s)
	}
	return nil
}

// ready asks GET /readyz for 200.
func (c *ControlPlane) ready(ctx context.Context) error {
	_, err := httpGet(ctx, "http://"+c.HTTPAddr+"/readyz")
	return err
}

// Metric scrapes the control plane's /metrics (in-cluster mode) and
// returns the sum of every sample of name whose labels include all of
// labels (nil matches every series); 0 when there is none.
func (c *ControlPlane) Metric(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	b, err := httpGet(context.Background(), "http://"+c.HTTPAddr+"/metrics")
	if err != nil {
		t.Fatalf("scrape control plane metrics: %v", err)
	}
	samples, err := ParseMetrics(string(b))
	if err != nil {
		t.Fatalf("parse control plane metrics: %v", err)
	}
	return SumSamples(samples, name, labels)
}

// Kill ends the control plane with SIGKILL, like a crash or an OOM kill.
func (c *ControlPlane) Kill() { c.Proc.Kill() }

// Start starts the control plane again on the same address, with the same
// flags and directory, after Kill or Stop. The address cannot change (the
// edges dial it), so a port taken in the meantime is retried for a while
// instead of moving.
func (c *ControlPlane) Start(t testing.TB) {
	t.Helper()
	var err error
	_ = testkit.Poll(context.Background(), 20*time.Second, func() error {
		if err = c.start(); err != nil && strings.Contains(err.Error(), "address already in use") {
			return err // taken: try again
		}
		return nil // started, or failed for good
	})
	if err != nil {
		t.Fatalf("start control plane again on %s: %v", c.Addr, err)
	}
}

// Restart stops the control plane gracefully (SIGTERM) and starts it again.
func (c *ControlPlane) Restart(t testing.TB) {
	t.Helper()
	c.Proc.Stop()
	c.Start(t)
}

// Pid is the process id of the current control-plane process.
func (c *ControlPlane) Pid() int { return c.Proc.cmd.Process.Pid }

// StatePath is where runtime changes are persisted.
func (c *ControlPlane) StatePath() string { return filepath.Join(c.Dir, "controlplane-state.json") }

// GrpcurlResult is one grpcurl run.
type GrpcurlResult struct {
	// Cmd is the command line without the binary, for failure messages.
	Cmd            string
	Stdout, Stderr string
	// Err is the exit error (nil on exit 0).
	Err error
	// Code and Message are the gRPC status grpcurl printed on failure
	// ("Unauthenticated", "missing bearer token: …"); Code is "" on success.
	Code, Message string
}

// Output is stdout and stderr together: what an operator sees, and what the
// tests search for secrets.
func (r GrpcurlResult) Output() string { return r.Stdout + r.Stderr }

var (
	grpcurlCode    = regexp.MustCompile(`(?m)^\s*Code: (\S+)\s*$`)
	grpcurlMessage = regexp.MustCompile(`(?m)^\s*Message: (.*)$`)
	// A call refused before it was sent (reflection needs a token too)
	// prints the status on one line.
	grpcurlInline = regexp.MustCompile(`rpc error: code = (\S+) desc = (.*)`)
)

// Grpcurl runs grpcurl with args; stdin is fed to it (for -d @) when not
// nil. It never fails the test: callers assert on the result.
func Grpcurl(t testing.TB, stdin []byte, args ...string) GrpcurlResult {
	t.Helper()
	// A hung call fails its test instead of the whole run.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, GrpcurlBin(t), args...)
	cmd.Env = scrubbedEnv(nil)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	r := GrpcurlResult{Cmd: commandLine(args)}
	r.Err = cmd.Run()
	r.Stdout, r.Stderr = stdout.String(), stderr.String()
	if r.Err != nil {
		if m := grpcurlCode.FindStringSubmatch(r.Stderr); m != nil {
			r.Code = m[1]
		}
		if m := grpcurlMessage.FindStringSubmatch(r.Stderr); m != nil {
			r.Message = strings.TrimSpace(m[1])
		}
		if m := grpcurlInline.FindStringSubmatch(r.Stderr); m != nil && r.Code == "" {
			r.Code, r.Message = m[1], strings.TrimSpace(m[2])
		}
	}
	return r
}

// commandLine renders grpcurl's arguments for a shell, with the bearer
// token replaced: failure messages show the command, not the secret.
func commandLine(args []string) string {
	out := []string{"grpcurl"}
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "authorization: Bearer "); ok && v != "" {
			a = "authorization: Bearer <token>"
		}
		if a == "" || strings.ContainsAny(a, " \t\"'{}$*?<>|&;()") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out = append(out, a)
	}
	return strings.Join(out, " ")
}

// AdminCall runs "grpcurl -plaintext [-H authorization: Bearer token] -d
// body Addr selfhost.v1.AdminService/method"; an empty token sends no
// authorization metadata.
func (c *ControlPlane) AdminCall(t testing.TB, token, method, body string) GrpcurlResult {
	t.Helper()
	args := []string{"-plaintext"}
	if token != "" {
		args = append(args, "-H", "authorization: Bearer "+token)
	}
	args = append(args, "-d", body, c.Addr, "selfhost.v1.AdminService/"+method)
	return Grpcurl(t, nil, args...)
}

// EdgeReadiness is an edge's /readyz body.
type EdgeReadiness struct {
	// Code is the HTTP status: 200 ready, 503 not ready (waiting for its
	// configuration or storage, or draining).
	Code          int    `json:"-"`
	Ready         bool   `json:"ready"`
	Storage       string `json:"storage"`
	StorageStatus string `json:"storage_status"`
	Mode          string `json:"mode"`
	Error         string `json:"error"`
	Config        string `json:"config"`
	Draining      bool   `json:"draining"`
	ControlPlane  string `json:"control_plane"`
	ConfigVersion string `json:"config_version"`
	LastNACK      string `json:"last_nack"`
}

// Readiness returns the edge's /readyz, ready (200) or not (503).
func (e *Edge) Readiness(t testing.TB) EdgeReadiness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.URL+"/readyz", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s/readyz: %v", e.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || (resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable) {
		t.Fatalf("GET %s/readyz: %d %q %v", e.URL, resp.StatusCode, b, err)
	}
	r := EdgeReadiness{Code: resp.StatusCode}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("parse /readyz %q: %v", b, err)
	}
	return r
}

// WaitReadiness polls /readyz until ok accepts it, and fails the test with
// the last body and what after timeout.
func (e *Edge) WaitReadiness(t testing.TB, what string, timeout time.Duration, ok func(EdgeReadiness) bool) EdgeReadiness {
	t.Helper()
	var r EdgeReadiness
	testkit.WaitFor(t, fmt.Sprintf("edge %s: %s", e.Addr, what), timeout, func() error {
		if r = e.Readiness(t); !ok(r) {
			return fmt.Errorf("/readyz is %+v", r)
		}
		return nil
	})
	return r
}

// DockerConfig writes a Docker config.json that gives user:password for
// host and returns its directory, for DOCKER_CONFIG: that is how crane
// presents a namespace's pull token to an edge.
func DockerConfig(t testing.TB, host, user, password string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := map[string]any{"auths": map[string]any{host: map[string]string{"username": user, "password": password}}}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatalf("write docker config: %v", err)
	}
	return dir
}

// CraneEnv runs crane with extra environment (e.g. DOCKER_CONFIG=dir) and
// returns its stdout.
func CraneEnv(t testing.TB, env []string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(craneBin(t), args...)
	cmd.Env = scrubbedEnv(env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("crane %v: %w\nstderr: %s", args, err, stderr.String())
	}
	return stdout.Bytes(), nil
}
