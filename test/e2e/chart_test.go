package e2e

// The Helm chart (charts/k8s-selfhost-repo, charts/README.md, docs/kubernetes.md):
// helm lint and template, the values schema, the RBAC against
// deploy/rbac.yaml, then `helm install` into a real kube-apiserver and the
// real control plane run with exactly the installed Deployment's args, env,
// config and Secret files and its ServiceAccount's token, until a labelled
// namespace gets its edge.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

const (
	chartKubeVersion = "1.37.2"
	chartName        = "selfhost-controlplane" // the chart's fixed object names
)

// helmCLI runs the helm binary with its cache, config and data in a
// temporary directory.
type helmCLI struct {
	bin, home, chart string
}

func newHelm(t *testing.T) *helmCLI {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return &helmCLI{bin: harness.HelmBin(t), home: t.TempDir(), chart: filepath.Join(root, "charts", "k8s-selfhost-repo")}
}

// run returns helm's stdout, and an error carrying its stderr.
func (h *helmCLI) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(h.home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(h.home, "config"),
		"HELM_DATA_HOME="+filepath.Join(h.home, "data"),
		"KUBECONFIG="+filepath.Join(h.home, "no-kubeconfig"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}

// template renders the chart in namespace selfhost-system with set
// (--set arguments) and returns its documents by "Kind/name".
func (h *helmCLI) template(t *testing.T, set ...string) map[string][]byte {
	t.Helper()
	args := []string{"template", "selfhost", h.chart, "--namespace", releaseNS, "--kube-version", chartKubeVersion}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := h.run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return splitManifests(t, out)
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

func splitManifests(t *testing.T, s string) map[string][]byte {
	t.Helper()
	docs := map[string][]byte{}
	for _, d := range docSep.Split(s, -1) {
		var meta struct {
			Kind     string            `json:"kind"`
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(d), &meta); err != nil {
			t.Fatalf("manifest %q: %v", d, err)
		}
		if meta.Kind == "" {
			continue
		}
		key := meta.Kind + "/" + meta.Metadata.Name
		if _, dup := docs[key]; dup {
			t.Fatalf("%s rendered twice", key)
		}
		docs[key] = []byte(d)
	}
	return docs
}

func decodeDoc[T any](t *testing.T, docs map[string][]byte, key string) *T {
	t.Helper()
	d, ok := docs[key]
	if !ok {
		t.Fatalf("%s not rendered; have %v", key, slices.Sorted(mapKeys(docs)))
	}
	v := new(T)
	if err := yaml.UnmarshalStrict(d, v); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return v
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestChartLintAndTemplate(t *testing.T) {
	t.Parallel()
	h := newHelm(t)

	t.Run("lint", func(t *testing.T) {
		out, err := h.run("lint", "--strict", h.chart, "--kube-version", chartKubeVersion)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "0 chart(s) failed") {
			t.Fatalf("helm lint: %s", out)
		}
		// The S3 + Clash path too.
		if _, err := h.run("lint", "--strict", h.chart, "--kube-version", chartKubeVersion,
			"--set", "s3.bucket=b,s3Credentials.accessKeyId=a,s3Credentials.secretAccessKey=s,clash.enabled=true,clash.subscriptionUrl=https://sub.example/x"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("defaults", func(t *testing.T) {
		docs := h.template(t)
		for _, key := range []string{"ServiceAccount/" + chartName, "Service/" + chartName, "ConfigMap/" + chartName + "-config",
			"ClusterRole/k8s-selfhost-repo-controlplane", "ClusterRoleBinding/k8s-selfhost-repo-controlplane",
			"Role/k8s-selfhost-repo-controlplane", "RoleBinding/k8s-selfhost-repo-controlplane", "ClusterRole/k8s-selfhost-repo-admin"} {
			if _, ok := docs[key]; !ok {
				t.Errorf("%s not rendered", key)
			}
		}
		for key := range docs {
			if strings.HasPrefix(key, "Secret/") {
				t.Errorf("defaults render %s; no Secret is needed without S3 keys or Clash", key)
			}
		}
		dep := decodeDoc[appsv1.Deployment](t, docs, "Deployment/"+chartName)
		if r := *dep.Spec.Replicas; r != 2 {
			t.Errorf("replicas %d, want 2", r)
		}
		c := dep.Spec.Template.Spec.Containers[0]
		for _, want := range []string{
			"--edge-image=ghcr.io/k8s-selfhost-repo/edge:0.1.0",
			"--edge-control-plane=selfhost-controlplane.selfhost-system.svc:9090",
			"--webhook-service=selfhost-controlplane:443",
			"--edge-resources=requests.cpu=50m,requests.memory=64Mi,limits.memory=256Mi",
		} {
			if !slices.Contains(c.Args, want) {
				t.Errorf("args %q lack %q", c.Args, want)
			}
		}
		for _, arg := range c.Args {
			if strings.HasPrefix(arg, "--edge-args") || arg == "--webhook-disabled" {
				t.Errorf("defaults: unexpected %s", arg)
			}
		}
		if c.Image != "ghcr.io/k8s-selfhost-repo/controlplane:0.1.0" {
			t.Errorf("image %s", c.Image)
		}
		sc := c.SecurityContext
		psc := dep.Spec.Template.Spec.SecurityContext
		if sc == nil || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
			psc == nil || !*psc.RunAsNonRoot || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("security context: pod %+v container %+v", psc, sc)
		}
		// Probes over plain HTTP on the http port (kubelet cannot probe
		// gRPC over TLS); the startup probe waits before its first try.
		for _, want := range []string{"--http-listen=:9091", "--grpc-service=" + chartName} {
			if !slices.Contains(c.Args, want) {
				t.Errorf("args %q lack %q", c.Args, want)
			}
		}
		for _, pr := range []struct {
			name string
			p    *corev1.Probe
			path string
		}{{"startup", c.StartupProbe, "/readyz"}, {"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
			if pr.p == nil || pr.p.HTTPGet == nil || pr.p.HTTPGet.Path != pr.path || pr.p.HTTPGet.Port.String() != "http" {
				t.Errorf("%s probe %+v, want HTTP GET %s on port http", pr.name, pr.p, pr.path)
			}
		}
		if p := c.StartupProbe; p != nil && p.InitialDelaySeconds < 1 {
			t.Errorf("startup probe initialDelaySeconds %d: a probe before the server listens logs a Warning event", p.InitialDelaySeconds)
		}
		if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "http" && p.ContainerPort == 9091 }) {
			t.Errorf("container ports %+v lack http 9091", c.Ports)
		}
		svc := decodeDoc[corev1.Service](t, docs, "Service/"+chartName)
		ports := map[int32]string{}
		for _, p := range svc.Spec.Ports {
			ports[p.Port] = p.Name + "->" + p.TargetPort.String()
		}
		if !reflect.DeepEqual(ports, map[int32]string{9090: "grpc->grpc", 443: "webhook->webhook", 9091: "metrics->http"}) {
			t.Errorf("service ports %v", ports)
		}
		if _, ok := docs["ServiceMonitor/"+chartName]; ok {
			t.Error("defaults render a ServiceMonitor; metrics.serviceMonitor.enabled is false")
		}
		cm := decodeDoc[corev1.ConfigMap](t, docs, "ConfigMap/"+chartName+"-config")
		if got := strings.TrimSpace(cm.Data["config.yaml"]); got != "{}" {
			t.Errorf("default config %q, want {} (the control plane's default upstreams)", got)
		}
	})

	t.Run("s3 and clash", func(t *testing.T) {
		docs := h.template(t, "s3.bucket=edge-cache,s3.prefix=shared,s3.region=eu-west-1,s3.regionEndpoint=http://minio.storage:9000,s3.pathStyle=true",
			"s3Credentials.accessKeyId=AKID,s3Credentials.secretAccessKey=SECRET",
			"clash.enabled=true,clash.subscriptionUrl=https://sub.example/token",
			"webhook.enabled=false,adminGroups={ops,sre}",
			"upstreams[0].prefix=test,upstreams[0].url=https://registry.example,upstreams[0].hosts={registry.example}")
		cm := decodeDoc[corev1.ConfigMap](t, docs, "ConfigMap/"+chartName+"-config")
		var cfg map[string]any
		if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{
			"upstreams": []any{map[string]any{"prefix": "test", "url": "https://registry.example", "hosts": []any{"registry.example"}}},
			"clash":     map[string]any{"enabled": true, "subscriptionUrlFile": "../clash/subscriptionUrl"},
			"storage": map[string]any{"s3": map[string]any{
				"bucket": "edge-cache", "prefix": "shared", "region": "eu-west-1", "endpoint": "http://minio.storage:9000", "pathStyle": true,
				"accessKeyIdFile": "../s3/accessKeyId", "secretAccessKeyFile": "../s3/secretAccessKey",
			}},
		}
		if !reflect.DeepEqual(cfg, want) {
			t.Errorf("config\n got %v\nwant %v", cfg, want)
		}
		if strings.Contains(cm.Data["config.yaml"], "SECRET") || strings.Contains(cm.Data["config.yaml"], "sub.example") {
			t.Errorf("the ConfigMap holds a secret: %s", cm.Data["config.yaml"])
		}
		s3 := decodeDoc[corev1.Secret](t, docs, "Secret/"+chartName+"-s3")
		if string(s3.Data["accessKeyId"]) != "AKID" || string(s3.Data["secretAccessKey"]) != "SECRET" {
			t.Errorf("s3 secret %v", s3.Data)
		}
		clash := decodeDoc[corev1.Secret](t, docs, "Secret/"+chartName+"-clash")
		if string(clash.Data["subscriptionUrl"]) != "https://sub.example/token" {
			t.Errorf("clash secret %v", clash.Data)
		}
		dep := decodeDoc[appsv1.Deployment](t, docs, "Deployment/"+chartName)
		args := dep.Spec.Template.Spec.Containers[0].Args
		for _, want := range []string{"--edge-args=--storage=control-plane", "--webhook-disabled", "--admin-groups=ops,sre"} {
			if !slices.Contains(args, want) {
				t.Errorf("args %q lack %q", args, want)
			}
		}
		if slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--webhook-service") }) {
			t.Errorf("webhook.enabled=false still passes --webhook-service: %q", args)
		}
	})

	t.Run("upstream and gRPC limits", func(t *testing.T) {
		// Unset (0), the flags are left out and the binaries' defaults hold.
		defArgs := decodeDoc[appsv1.Deployment](t, h.template(t), "Deployment/"+chartName).Spec.Template.Spec.Containers[0].Args
		limitFlags := []string{"--namespace-max-upstream-rps", "--namespace-upstream-burst", "--max-grpc-connections", "--max-grpc-streams", "--max-grpc-streams-per-caller"}
		for _, f := range limitFlags {
			if slices.ContainsFunc(defArgs, func(a string) bool { return strings.HasPrefix(a, f+"=") }) {
				t.Errorf("default values pass %s: %q", f, defArgs)
			}
		}
		docs := h.template(t, "edge.upstreamRateLimit.requestsPerSecond=200000,edge.upstreamRateLimit.burst=40,grpc.maxConnections=2048,grpc.maxStreamsPerConnection=32,grpc.maxStreamsPerCaller=512")
		args := decodeDoc[appsv1.Deployment](t, docs, "Deployment/"+chartName).Spec.Template.Spec.Containers[0].Args
		for i, v := range []string{"200000", "40", "2048", "32", "512"} {
			if want := limitFlags[i] + "=" + v; !slices.Contains(args, want) {
				t.Errorf("args %q lack %q", args, want)
			}
		}
	})

	t.Run("existing secrets", func(t *testing.T) {
		docs := h.template(t, "s3.bucket=edge-cache,s3Credentials.existingSecret=my-s3,clash.enabled=true,clash.existingSecret=my-clash")
		for key := range docs {
			if strings.HasPrefix(key, "Secret/") {
				t.Errorf("existingSecret still renders %s", key)
			}
		}
		dep := decodeDoc[appsv1.Deployment](t, docs, "Deployment/"+chartName)
		secrets := map[string]string{}
		for _, v := range dep.Spec.Template.Spec.Volumes {
			if v.Secret != nil {
				secrets[v.Name] = v.Secret.SecretName
			}
		}
		if !reflect.DeepEqual(secrets, map[string]string{"s3": "my-s3", "clash": "my-clash"}) {
			t.Errorf("secret volumes %v", secrets)
		}
	})

	t.Run("service monitor", func(t *testing.T) {
		docs := h.template(t, "metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.interval=15s,metrics.serviceMonitor.labels.release=prom")
		// No Go type of the CRD here: the fields the Prometheus Operator
		// reads, strictly.
		type endpoint struct {
			Port, Path, Scheme, Interval, ScrapeTimeout string
		}
		type serviceMonitor struct {
			APIVersion string            `json:"apiVersion"`
			Kind       string            `json:"kind"`
			Metadata   metav1.ObjectMeta `json:"metadata"`
			Spec       struct {
				Selector          metav1.LabelSelector `json:"selector"`
				NamespaceSelector struct {
					MatchNames []string `json:"matchNames"`
				} `json:"namespaceSelector"`
				Endpoints []endpoint `json:"endpoints"`
			} `json:"spec"`
		}
		sm := decodeDoc[serviceMonitor](t, docs, "ServiceMonitor/"+chartName)
		if sm.APIVersion != "monitoring.coreos.com/v1" || sm.Metadata.Labels["release"] != "prom" {
			t.Errorf("ServiceMonitor %s, labels %v", sm.APIVersion, sm.Metadata.Labels)
		}
		want := []endpoint{{Port: "metrics", Path: "/metrics", Scheme: "http", Interval: "15s", ScrapeTimeout: "10s"}}
		if !reflect.DeepEqual(sm.Spec.Endpoints, want) || !reflect.DeepEqual(sm.Spec.NamespaceSelector.MatchNames, []string{"selfhost-system"}) {
			t.Errorf("ServiceMonitor spec %+v", sm.Spec)
		}
		// It selects the Service, which has the metrics port.
		svc := decodeDoc[corev1.Service](t, docs, "Service/"+chartName)
		for k, v := range sm.Spec.Selector.MatchLabels {
			if svc.Labels[k] != v {
				t.Errorf("ServiceMonitor selects %s=%s; the Service has %v", k, v, svc.Labels)
			}
		}
		if _, err := h.run("template", "selfhost", h.chart, "--kube-version", chartKubeVersion, "--set", "metrics.serviceMonitor.interval=often"); err == nil {
			t.Error("an interval that is no duration rendered")
		}
	})

	t.Run("schema rejects typos and wrong types", func(t *testing.T) {
		for _, tc := range []struct{ name, set, want string }{
			{"typo nested", "s3.buckett=x", "buckett"},
			{"typo top level", "replicaCont=3", "replicaCont"},
			{"typo in edge", "edge.imgae.tag=x", "imgae"},
			{"wrong type", "replicaCount=two", "replicaCount"},
			{"wrong type bool", "webhook.enabled=yes", "enabled"},
			{"typo in metrics", "metrics.serviceMonitor.enabeld=true", "enabeld"},
			{"typo in grpc", "grpc.maxConnection=1", "maxConnection"},
			{"negative rate", "edge.upstreamRateLimit.requestsPerSecond=-1", "requestsPerSecond"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := h.run("template", "selfhost", h.chart, "--kube-version", chartKubeVersion, "--set", tc.set)
				if err == nil || !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("--set %s: got %v, want a schema error naming %q", tc.set, err, tc.want)
				}
			})
		}
		for _, set := range []string{
			"s3Credentials.accessKeyId=a,s3Credentials.secretAccessKey=s", // keys without a bucket
			"s3.bucket=b,s3Credentials.accessKeyId=a",                     // one key of two
			"clash.enabled=true", // no subscription
		} {
			if _, err := h.run("template", "selfhost", h.chart, "--kube-version", chartKubeVersion, "--set", set); err == nil {
				t.Errorf("--set %s rendered; want an error", set)
			}
		}
	})

	t.Run("rbac equals deploy/rbac.yaml", func(t *testing.T) {
		root, err := harness.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(filepath.Join(root, "deploy", "rbac.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		const ns = "other-ns" // not deploy/rbac.yaml's, so the substitution shows
		out, err := h.run("template", "selfhost", h.chart, "--namespace", ns, "--kube-version", chartKubeVersion)
		if err != nil {
			t.Fatal(err)
		}
		want, got := splitManifests(t, string(raw)), splitManifests(t, out)
		for _, key := range []string{"ClusterRole/k8s-selfhost-repo-controlplane", "ClusterRole/k8s-selfhost-repo-admin"} {
			w, g := decodeDoc[rbacv1.ClusterRole](t, want, key), decodeDoc[rbacv1.ClusterRole](t, got, key)
			if !reflect.DeepEqual(w.Rules, g.Rules) {
				t.Errorf("%s rules differ from deploy/rbac.yaml:\n got %+v\nwant %+v", key, g.Rules, w.Rules)
			}
		}
		wr, gr := decodeDoc[rbacv1.Role](t, want, "Role/k8s-selfhost-repo-controlplane"), decodeDoc[rbacv1.Role](t, got, "Role/k8s-selfhost-repo-controlplane")
		if !reflect.DeepEqual(wr.Rules, gr.Rules) {
			t.Errorf("Role rules differ from deploy/rbac.yaml:\n got %+v\nwant %+v", gr.Rules, wr.Rules)
		}
		if gr.Namespace != ns {
			t.Errorf("Role namespace %q, want %q", gr.Namespace, ns)
		}
		sa := []rbacv1.Subject{{Kind: "ServiceAccount", Name: chartName, Namespace: ns}}
		crb := decodeDoc[rbacv1.ClusterRoleBinding](t, got, "ClusterRoleBinding/k8s-selfhost-repo-controlplane")
		rb := decodeDoc[rbacv1.RoleBinding](t, got, "RoleBinding/k8s-selfhost-repo-controlplane")
		if !reflect.DeepEqual(crb.Subjects, sa) || !reflect.DeepEqual(rb.Subjects, sa) || rb.Namespace != ns {
			t.Errorf("bindings: %+v / %+v in %q, want subjects %+v", crb.Subjects, rb.Subjects, rb.Namespace, sa)
		}
		wcrb := decodeDoc[rbacv1.ClusterRoleBinding](t, want, "ClusterRoleBinding/k8s-selfhost-repo-controlplane")
		if crb.RoleRef != wcrb.RoleRef || rb.RoleRef != decodeDoc[rbacv1.RoleBinding](t, want, "RoleBinding/k8s-selfhost-repo-controlplane").RoleRef {
			t.Errorf("roleRefs differ from deploy/rbac.yaml")
		}
	})
}

// TestChartInstall installs the chart into a real kube-apiserver and runs
// the real control plane as the installed Deployment would: its args and
// env (downward API resolved here), its config from the ConfigMap, its
// key files from the Secrets, its ServiceAccount's token. A labelled
// namespace then gets its edge, which proves the chart's RBAC and args
// are enough.
func TestChartInstall(t *testing.T) {
	t.Parallel()
	h := newHelm(t)
	kube := harness.StartKube(t)
	ctx := context.Background()

	v, err := kube.Client.Discovery().ServerVersion()
	if err != nil || v.GitVersion != "v"+chartKubeVersion {
		t.Fatalf("apiserver version %v (%v), want v%s", v, err, chartKubeVersion)
	}

	out, err := h.run("install", "selfhost", h.chart, "--kubeconfig", kube.Kubeconfig,
		"--namespace", releaseNS, "--create-namespace", "--wait=false",
		"--set", "s3.bucket=edge-cache,s3.prefix=shared,s3.regionEndpoint=http://127.0.0.1:9,s3.pathStyle=true",
		"--set", "s3Credentials.accessKeyId=AKIDCHART,s3Credentials.secretAccessKey=chart-secret-key",
		"--set", "clash.enabled=true,clash.subscriptionUrl=http://127.0.0.1:9/subscription",
		"--set", "adminGroups={selfhost-admins}",
		"--set", "edge.image.repository=registry.invalid/selfhost/edge")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "k8s-selfhost-repo.io/cache=enabled") || !strings.Contains(out, "grpcurl") {
		t.Errorf("NOTES do not say how to label a namespace and use grpcurl:\n%s", out)
	}

	core := kube.Client.CoreV1()
	for _, get := range []func() error{
		func() error {
			_, err := core.ServiceAccounts(releaseNS).Get(ctx, chartName, metav1.GetOptions{})
			return err
		},
		func() error { _, err := core.Services(releaseNS).Get(ctx, chartName, metav1.GetOptions{}); return err },
		func() error {
			_, err := core.Secrets(releaseNS).Get(ctx, chartName+"-s3", metav1.GetOptions{})
			return err
		},
		func() error {
			_, err := core.Secrets(releaseNS).Get(ctx, chartName+"-clash", metav1.GetOptions{})
			return err
		},
		func() error {
			_, err := kube.Client.RbacV1().ClusterRoles().Get(ctx, "k8s-selfhost-repo-admin", metav1.GetOptions{})
			return err
		},
		func() error {
			_, err := kube.Client.RbacV1().RoleBindings(releaseNS).Get(ctx, "k8s-selfhost-repo-controlplane", metav1.GetOptions{})
			return err
		},
	} {
		if err := get(); err != nil {
			t.Fatalf("installed object: %v", err)
		}
	}
	dep, err := kube.Client.AppsV1().Deployments(releaseNS).Get(ctx, chartName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]

	// The pod's filesystem as far as the control plane sees it: every
	// volume mount materialised under root from the installed objects.
	root := t.TempDir()
	volumes := map[string]corev1.Volume{}
	for _, vol := range pod.Volumes {
		volumes[vol.Name] = vol
	}
	for _, m := range c.VolumeMounts {
		dir := filepath.Join(root, m.MountPath)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		vol := volumes[m.Name]
		var data map[string][]byte
		var items []corev1.KeyToPath
		switch {
		case vol.ConfigMap != nil:
			cm, err := core.ConfigMaps(releaseNS).Get(ctx, vol.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("volume %s: %v", m.Name, err)
			}
			data = map[string][]byte{}
			for k, v := range cm.Data {
				data[k] = []byte(v)
			}
			items = vol.ConfigMap.Items
		case vol.Secret != nil:
			s, err := core.Secrets(releaseNS).Get(ctx, vol.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("volume %s: %v", m.Name, err)
			}
			data, items = s.Data, vol.Secret.Items
		case vol.EmptyDir != nil:
			continue
		default:
			t.Fatalf("volume %s: a kind this test cannot materialise", m.Name)
		}
		if len(items) == 0 {
			for k := range data {
				items = append(items, corev1.KeyToPath{Key: k, Path: k})
			}
		}
		for _, it := range items {
			v, ok := data[it.Key]
			if !ok {
				t.Fatalf("volume %s: key %s missing", m.Name, it.Key)
			}
			if err := os.WriteFile(filepath.Join(dir, it.Path), v, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}

	grpcAddr := testkit.FreeAddr(t)
	httpAddr := testkit.FreeAddr(t)
	webhookAddr := testkit.FreeAddr(t)
	kubeconfig := kube.KubeconfigFor(t, "chart-controlplane", kube.ServiceAccountToken(t, releaseNS, chartName, nil, time.Hour))
	args := []string{"--kubeconfig=" + kubeconfig}
	for _, a := range c.Args {
		name, val, _ := strings.Cut(a, "=")
		switch name {
		case "--config":
			a = "--config=" + filepath.Join(root, val)
		case "--grpc-listen":
			a = "--grpc-listen=" + grpcAddr
		case "--webhook-listen":
			a = "--webhook-listen=" + webhookAddr
		case "--http-listen":
			a = "--http-listen=" + httpAddr
		case "--webhook-service":
			// The apiserver cannot reach an in-cluster Service (there is no
			// cluster network here), so the webhook is off; TestKubernetes
			// proves the webhook with --webhook-url.
			a = "--webhook-disabled"
		}
		args = append(args, a)
	}
	for _, want := range []string{"--edge-args=--storage=control-plane", "--admin-groups=selfhost-admins",
		"--edge-control-plane=selfhost-controlplane." + releaseNS + ".svc:9090"} {
		if !slices.Contains(args, want) {
			t.Errorf("installed args %q lack %q", c.Args, want)
		}
	}
	const podName = "selfhost-controlplane-chart-0"
	var env []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env = append(env, e.Name+"="+dep.Namespace)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env = append(env, e.Name+"="+podName)
		default:
			t.Fatalf("env %s: a source this test cannot resolve", e.Name)
		}
	}

	stopControlPlane := startChartControlPlane(t, args, env, root, httpAddr)

	e := &kubeEnv{kube: kube}
	e.labelNamespace(t, "chart-tenant", "enabled")
	o := e.waitEdgeObjects(t, "chart-tenant")
	if o.token == "" {
		t.Fatal("no pull token")
	}
	edge, err := kube.Client.AppsV1().Deployments("chart-tenant").Get(ctx, "selfhost-edge", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ec := edge.Spec.Template.Spec.Containers[0]
	if ec.Image != "registry.invalid/selfhost/edge:0.1.0" {
		t.Errorf("edge image %s, want the chart's edge.image", ec.Image)
	}
	if !slices.Contains(ec.Args, "--storage=control-plane") {
		t.Errorf("edge args %q lack --storage=control-plane (chart s3.bucket)", ec.Args)
	}
	if !slices.ContainsFunc(ec.Args, func(a string) bool { return strings.Contains(a, "selfhost-controlplane."+releaseNS+".svc:9090") }) {
		t.Errorf("edge args %q do not dial the chart's Service", ec.Args)
	}
	// gRPC TLS is on by default: the edge gets the CA.
	if !slices.ContainsFunc(ec.Args, func(a string) bool { return strings.HasPrefix(a, "--control-plane-ca-file=") }) {
		t.Errorf("edge args %q lack --control-plane-ca-file (the chart's default --grpc-tls=on)", ec.Args)
	}
	if _, err := kube.Client.CoreV1().ConfigMaps("chart-tenant").Get(ctx, caConfigMap, metav1.GetOptions{}); err != nil {
		t.Errorf("CA ConfigMap: %v", err)
	}
	if got := ec.Resources.Limits.Memory().String(); got != "256Mi" {
		t.Errorf("edge memory limit %s, want the chart's 256Mi", got)
	}
	// Leader election ran under the chart's Role.
	if _, err := kube.Client.CoordinationV1().Leases(releaseNS).Get(ctx, "k8s-selfhost-repo-controlplane", metav1.GetOptions{}); err != nil {
		t.Errorf("lease: %v", err)
	}

	// helm uninstall: the control plane's pod stops, the pre-delete hook
	// runs (by hand: no kubelet), nothing is left.
	stopControlPlane()
	runChartCleanup(t, h, kube, "chart-tenant")
}

// startChartControlPlane runs the control plane binary with exactly args
// and env (nothing inherited from the test's environment) and waits until
// its /readyz (the chart's probes' port) answers 200. stop ends it with SIGINT, as
// kubelet's SIGTERM would; the test's cleanup calls it too.
func startChartControlPlane(t *testing.T, args, env []string, dir, httpAddr string) (stop func()) {
	t.Helper()
	logPath := filepath.Join(dir, "controlplane.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(harness.ControlPlaneBinary(t), args...)
	cmd.Env, cmd.Dir = env, dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop = sync.OnceFunc(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	t.Cleanup(func() {
		stop()
		if err := logFile.Close(); err != nil {
			t.Errorf("close control plane log: %v", err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("---- control plane log (args %q) ----\n%s\n---- end ----", args, b)
		}
	})
	var why string
	waitUntil(t, "control plane /readyz", kubeTimeout, func() bool {
		select {
		case <-exited:
			t.Fatalf("control plane exited: %v", cmd.ProcessState)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/readyz", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			why = err.Error()
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		why = resp.Status + ": " + string(body)
		return resp.StatusCode == http.StatusOK
	}, func() string { return why })
	return stop
}
