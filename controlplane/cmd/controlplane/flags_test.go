package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// clusterDefaults are the in-cluster flags' defaults; in-cluster cases
// change what they set.
func clusterDefaults(change func(*clusterFlags)) clusterFlags {
	c := clusterFlags{
		edgeAudience: DefaultEdgeAudience, edgePullPolicy: "IfNotPresent",
		edgeResources: "requests.cpu=50m,requests.memory=64Mi,limits.memory=256Mi", workers: 4, kubeQPS: 50, kubeBurst: 100, edgeReplicas: 2, mirrorAuth: true, nodeAccess: "nodePort",
		leaseDuration: 15 * time.Second, renewDeadline: 10 * time.Second, retryPeriod: 2 * time.Second,
		webhookListen: ":8443", clusterDomain: "cluster.local", tlsSyncInterval: time.Minute, caPropagation: DefaultCAPropagation,
	}
	if change != nil {
		change(&c)
	}
	return c
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	inCluster := []string{"--namespace", "sys", "--edge-image", "edge:1", "--edge-control-plane", "cp.sys.svc:9090", "--webhook-service", "cp:443"}
	inClusterWant := clusterDefaults(func(c *clusterFlags) {
		c.namespace, c.edgeImage, c.edgeControlPlane, c.webhookService = "sys", "edge:1", "cp.sys.svc:9090", "cp:443"
		c.grpcTLS = true
	})
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    flags
		wantErr string
	}{
		{"standalone defaults", []string{"--standalone", "--config", "c.yaml"}, nil,
			flags{standalone: true, config: "c.yaml", grpcListen: ":9090", debounce: 50 * time.Millisecond, logLevel: slog.LevelInfo, cluster: clusterDefaults(nil)}, ""},
		{"everything from the environment", nil, map[string]string{
			"CONTROLPLANE_STANDALONE": "true", "CONTROLPLANE_CONFIG": "e.yaml", "CONTROLPLANE_GRPC_LISTEN": "127.0.0.1:1",
			"CONTROLPLANE_STATE_DIR": "/s", "CONTROLPLANE_DEBOUNCE": "0s", "CONTROLPLANE_LOG_LEVEL": "debug",
		}, flags{standalone: true, config: "e.yaml", grpcListen: "127.0.0.1:1", stateDir: "/s", logLevel: slog.LevelDebug, cluster: clusterDefaults(nil)}, ""},
		{"flag beats environment", []string{"--grpc-listen", "127.0.0.1:2"}, map[string]string{
			"CONTROLPLANE_STANDALONE": "1", "CONTROLPLANE_CONFIG": "e.yaml", "CONTROLPLANE_GRPC_LISTEN": "127.0.0.1:1",
		}, flags{standalone: true, config: "e.yaml", grpcListen: "127.0.0.1:2", debounce: 50 * time.Millisecond, cluster: clusterDefaults(nil)}, ""},
		{"in-cluster", inCluster, nil, flags{grpcListen: ":9090", debounce: 50 * time.Millisecond, shutdownDelay: DefaultShutdownDelay, httpListen: DefaultHTTPListen, cluster: inClusterWant}, ""},
		{"in-cluster plaintext, no HTTP port", append(slices.Clone(inCluster), "--grpc-tls=off", "--http-listen=off"), nil,
			flags{grpcListen: ":9090", debounce: 50 * time.Millisecond, shutdownDelay: DefaultShutdownDelay, cluster: clusterDefaults(func(c *clusterFlags) {
				*c = inClusterWant
				c.grpcTLS = false
			})}, ""},
		{"standalone HTTP port", []string{"--standalone", "--config", "c.yaml", "--http-listen", "127.0.0.1:9091"}, nil,
			flags{standalone: true, config: "c.yaml", grpcListen: ":9090", debounce: 50 * time.Millisecond, httpListen: "127.0.0.1:9091", cluster: clusterDefaults(nil)}, ""},
		{"in-cluster bad grpc-tls", append(slices.Clone(inCluster), "--grpc-tls=maybe"), nil, flags{}, "--grpc-tls"},
		{"in-cluster TLS with a certificate file", append(slices.Clone(inCluster), "--tls-cert", "c.pem", "--tls-key", "k.pem"), nil, flags{}, "--tls-cert is for --standalone"},
		{"in-cluster lists: flag replaces environment", append(slices.Clone(inCluster), "--admin-groups", "ops, sre", "--edge-args", "--storage=s3://b/p", "--edge-args", "--s3-endpoint=http://s3:9000"),
			map[string]string{"CONTROLPLANE_ADMIN_GROUPS": "env-group", "CONTROLPLANE_WEBHOOK_HOSTS": "a.example,10.0.0.1"},
			flags{grpcListen: ":9090", debounce: 50 * time.Millisecond, shutdownDelay: DefaultShutdownDelay, httpListen: DefaultHTTPListen, cluster: clusterDefaults(func(c *clusterFlags) {
				*c = inClusterWant
				c.adminGroups = []string{"ops", "sre"}
				c.edgeArgs = []string{"--storage=s3://b/p", "--s3-endpoint=http://s3:9000"}
				c.webhookHosts = []string{"a.example", "10.0.0.1"}
			})}, ""},
		{"in-cluster without namespace", []string{"--edge-image", "e"}, nil, flags{}, "--namespace is required"},
		{"in-cluster without edge image", []string{"--namespace", "n"}, nil, flags{}, "--edge-image is required"},
		{"in-cluster without control plane address", []string{"--namespace", "n", "--edge-image", "e"}, nil, flags{}, "--edge-control-plane is required"},
		{"in-cluster with both webhook targets", append(slices.Clone(inCluster), "--webhook-url", "https://127.0.0.1:8443/mutate-pods"), nil, flags{}, "exactly one of --webhook-service and --webhook-url"},
		{"in-cluster with state dir", append(slices.Clone(inCluster), "--state-dir", "/s"), nil, flags{}, "--state-dir is for --standalone"},
		{"in-cluster burst below qps", append(slices.Clone(inCluster), "--kube-api-qps", "20", "--kube-api-burst", "10"), nil, flags{}, "--kube-api-burst"},
		{"in-cluster zero workers", append(slices.Clone(inCluster), "--workers", "0"), nil, flags{}, "--workers"},
		{"in-cluster edge replicas", append(slices.Clone(inCluster), "--edge-replicas", "3"), nil,
			flags{grpcListen: ":9090", debounce: 50 * time.Millisecond, shutdownDelay: DefaultShutdownDelay, httpListen: DefaultHTTPListen, cluster: clusterDefaults(func(c *clusterFlags) {
				*c = inClusterWant
				c.edgeReplicas = 3
			})}, ""},
		{"in-cluster zero edge replicas", append(slices.Clone(inCluster), "--edge-replicas", "0"), nil, flags{}, "--edge-replicas"},
		{"in-cluster node access", append(slices.Clone(inCluster), "--node-access", "auto"), nil,
			flags{grpcListen: ":9090", debounce: 50 * time.Millisecond, shutdownDelay: DefaultShutdownDelay, httpListen: DefaultHTTPListen, cluster: clusterDefaults(func(c *clusterFlags) {
				*c = inClusterWant
				c.nodeAccess = "auto"
			})}, ""},
		{"in-cluster bad node access", append(slices.Clone(inCluster), "--node-access", "iptables"), nil, flags{}, "--node-access"},
		{"no config", []string{"--standalone"}, nil, flags{}, "--config FILE is required"},
		{"bad env bool", nil, map[string]string{"CONTROLPLANE_STANDALONE": "yes please"}, flags{}, "CONTROLPLANE_STANDALONE"},
		{"bad env duration", []string{"--standalone", "--config", "c"}, map[string]string{"CONTROLPLANE_DEBOUNCE": "soon"}, flags{}, "CONTROLPLANE_DEBOUNCE"},
		{"bad env number", []string{"--standalone", "--config", "c"}, map[string]string{"CONTROLPLANE_WORKERS": "many"}, flags{}, "CONTROLPLANE_WORKERS (flag -workers)"},
		{"bad env bool with a default of true", []string{"--standalone", "--config", "c"}, map[string]string{"CONTROLPLANE_MIRROR_AUTH": "no thanks"}, flags{}, "CONTROLPLANE_MIRROR_AUTH"},
		{"negative debounce", []string{"--standalone", "--config", "c", "--debounce", "-1s"}, nil, flags{}, "--debounce"},
		{"bad level", []string{"--standalone", "--config", "c", "--log-level", "loud"}, nil, flags{}, "--log-level"},
		{"half TLS", []string{"--standalone", "--config", "c", "--tls-cert", "c.pem"}, nil, flags{}, "--tls-cert and --tls-key"},
		{"stray argument", []string{"--standalone", "--config", "c", "extra"}, nil, flags{}, "unexpected arguments"},
		{"gRPC and upstream limits", []string{"--standalone", "--config", "c", "--max-grpc-connections", "10", "--max-grpc-streams", "8", "--max-grpc-streams-per-caller", "100",
			"--namespace-max-upstream-rps", "20", "--namespace-upstream-burst", "40"}, nil,
			flags{standalone: true, config: "c", grpcListen: ":9090", debounce: 50 * time.Millisecond, cluster: clusterDefaults(nil),
				maxGRPCConns: 10, maxGRPCStreams: 8, maxCallerStreams: 100, upstreamRPS: 20, upstreamBurst: 40}, ""},
		{"negative connections", []string{"--standalone", "--config", "c", "--max-grpc-connections", "-1"}, nil, flags{}, "--max-grpc-connections"},
		{"negative rate", []string{"--standalone", "--config", "c", "--namespace-max-upstream-rps", "-1"}, nil, flags{}, "--namespace-max-upstream-rps"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, _, err := parseFlags(tc.args, environ(tc.env), &bytes.Buffer{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// environ is env as os.Environ gives it.
func environ(env map[string]string) []string {
	var kv []string
	for k, v := range env {
		kv = append(kv, k+"="+v)
	}
	return kv
}

// TestEnvironmentVariables: the server and the cleanup subcommand read one
// environment; each knows the other's variables, and warns only about
// variables neither has.
func TestEnvironmentVariables(t *testing.T) {
	t.Parallel()
	env := environ(map[string]string{
		"CONTROLPLANE_STANDALONE": "true", "CONTROLPLANE_CONFIG": "c.yaml", "CONTROLPLANE_NAMESPACE": "sys",
		"CONTROLPLANE_CLEANUP_TIMEOUT": "1m", "CONTROLPLANE_EDGE_IMAGE": "e:1", "CONTROLPLANE_GRPC_LISTN": ":1",
		"CONTROLPLANE_TIMEOUT": "1m",
	})
	_, res, err := parseFlags(nil, env, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"CONTROLPLANE_GRPC_LISTN", "CONTROLPLANE_TIMEOUT"}; !slices.Equal(res.Unknown, want) {
		t.Errorf("server: unknown %v, want %v", res.Unknown, want)
	}
	cf, res, err := parseCleanupFlags(nil, env, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cf.namespace != "sys" || cf.timeout != time.Minute {
		t.Errorf("cleanup: %+v", cf)
	}
	if want := []string{"CONTROLPLANE_GRPC_LISTN", "CONTROLPLANE_TIMEOUT"}; !slices.Equal(res.Unknown, want) {
		t.Errorf("cleanup: unknown %v, want %v", res.Unknown, want)
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	_, _, err := parseFlags([]string{"--help"}, nil, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	for _, f := range []string{"-standalone", "-config", "-grpc-listen", "-state-dir", "-debounce", "-log-level", "-tls-cert", "-tls-key", "CONTROLPLANE_",
		"-kubeconfig", "-namespace", "-admin-groups", "-edge-image", "-edge-replicas", "-edge-control-plane", "-webhook-service", "-webhook-url", "k8s-selfhost-repo.io/cache=enabled",
		"-max-grpc-connections", "-max-grpc-streams", "-max-grpc-streams-per-caller", "-namespace-max-upstream-rps", "-namespace-upstream-burst"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("--help does not mention %s", f)
		}
	}
}

func TestRunStartsAndStops(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := dir + "/controlplane.yaml"
	if err := os.WriteFile(cfg, []byte("adminTokens: [admin-token-0123456789]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f := flags{standalone: true, config: cfg, grpcListen: "127.0.0.1:0", debounce: time.Millisecond}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx, f, log) }()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}

	f.config = dir + "/missing.yaml"
	if err := run(t.Context(), f, log); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing config: %v", err)
	}
}

func TestParseResources(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, wantErr string
		want        string
	}{
		{"requests.cpu=50m,limits.memory=256Mi", "", "requests: cpu=50m; limits: memory=256Mi"},
		{"", "", "requests: ; limits: "},
		{"requests.gpu=1", "want requests.cpu", ""},
		{"limits.memory=lots", "limits.memory=lots", ""},
		{"cpu", "want requests.cpu", ""},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			r, err := parseResources(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := "requests: "
			if q, ok := r.Requests["cpu"]; ok {
				got += "cpu=" + q.String()
			}
			got += "; limits: "
			if q, ok := r.Limits["memory"]; ok {
				got += "memory=" + q.String()
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestWebhookOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		c       clusterFlags
		wantErr string
	}{
		{"service", clusterFlags{webhookService: "cp:443"}, ""},
		{"url", clusterFlags{webhookURL: "https://127.0.0.1:8443/mutate-pods"}, ""},
		{"plain http url", clusterFlags{webhookURL: "http://127.0.0.1:8443/mutate-pods"}, "want https"},
		{"service without port", clusterFlags{webhookService: "cp"}, "want NAME:PORT"},
		{"service port out of range", clusterFlags{webhookService: "cp:70000"}, "port must be"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := webhookOptions(tc.c)
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestGRPCHosts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		c    clusterFlags
		want []string
	}{
		{"service from the address", clusterFlags{namespace: "sys", edgeControlPlane: "cp.sys.svc:9090", clusterDomain: "cluster.local"},
			[]string{"cp.sys.svc", "cp", "cp.sys", "cp.sys.svc", "cp.sys.svc.cluster.local"}},
		{"named service, IP address", clusterFlags{namespace: "sys", edgeControlPlane: "127.0.0.1:9090", grpcService: "cp", clusterDomain: "example.org."},
			[]string{"127.0.0.1", "cp", "cp.sys", "cp.sys.svc", "cp.sys.svc.example.org"}},
		{"IP address only", clusterFlags{namespace: "sys", edgeControlPlane: "10.0.0.1:9090"}, []string{"10.0.0.1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := grpcHosts(tc.c)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("grpcHosts = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
