package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
)

// ApplyFile creates every object of a multi-document YAML file (such as
// deploy/rbac.yaml) with the admin client; objects that exist are left as
// they are. The kinds are the ones this repository's manifests use.
func (k *Kube) ApplyFile(t testing.TB, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("apply %s: %v", path, err)
	}
	ctx := context.Background()
	dec := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := dec.Read()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("apply %s: document %d: %v", path, i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("apply %s: document %d: %v", path, i, err)
		}
		if err := k.create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("apply %s: document %d (%T): %v", path, i, obj, err)
		}
	}
}

func (k *Kube) create(ctx context.Context, obj any) error {
	c := k.Client
	o := metav1.CreateOptions{}
	var err error
	switch v := obj.(type) {
	case *corev1.Namespace:
		_, err = c.CoreV1().Namespaces().Create(ctx, v, o)
	case *corev1.ServiceAccount:
		k.EnsureNamespace(ctx, v.Namespace)
		_, err = c.CoreV1().ServiceAccounts(v.Namespace).Create(ctx, v, o)
	case *rbacv1.ClusterRole:
		_, err = c.RbacV1().ClusterRoles().Create(ctx, v, o)
	case *rbacv1.ClusterRoleBinding:
		_, err = c.RbacV1().ClusterRoleBindings().Create(ctx, v, o)
	case *rbacv1.Role:
		k.EnsureNamespace(ctx, v.Namespace)
		_, err = c.RbacV1().Roles(v.Namespace).Create(ctx, v, o)
	case *rbacv1.RoleBinding:
		k.EnsureNamespace(ctx, v.Namespace)
		_, err = c.RbacV1().RoleBindings(v.Namespace).Create(ctx, v, o)
	default:
		return fmt.Errorf("kind %T is not supported by ApplyFile", obj)
	}
	return err
}

// EnsureNamespace creates namespace ns when it is missing.
func (k *Kube) EnsureNamespace(ctx context.Context, ns string) {
	_, _ = k.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
}

// KubeconfigFor writes a kubeconfig that authenticates with token (a
// ServiceAccount's), for a process that must run with that identity's
// RBAC, and returns its path.
func (k *Kube) KubeconfigFor(t testing.TB, name, token string) string {
	t.Helper()
	cfg := rest.AnonymousClientConfig(k.Config)
	cfg.BearerToken = token
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	if err := writeKubeconfig(path, cfg); err != nil {
		t.Fatalf("kubeconfig for %s: %v", name, err)
	}
	return path
}

// StartControlPlaneInCluster starts the control plane in in-cluster mode
// against kube, authenticated by kubeconfig, with configYAML (upstreams,
// clash) as --config. It serves gRPC on Addr, the injector on WebhookAddr
// and /healthz, /readyz, /metrics on HTTPAddr, and registers the webhook
// with --webhook-url https://WebhookAddr/mutate-pods. args add flags (they
// must include --namespace, --edge-image and --edge-control-plane, which
// a test chooses). gRPC is plaintext (--grpc-tls=off) unless args set
// --grpc-tls: most tests dial it without the CA. It stops at once on
// SIGTERM (--shutdown-delay=0) unless args set --shutdown-delay: tests of
// handover stop it as a crash-free, quick exit. The control plane is
// ready when /readyz says so.
func StartControlPlaneInCluster(t testing.TB, kubeconfig, configYAML string, args ...string) *ControlPlane {
	t.Helper()
	c := &ControlPlane{bin: ControlPlaneBinary(t), Dir: t.TempDir()}
	c.ConfigPath = filepath.Join(c.Dir, "controlplane.yaml")
	if err := os.WriteFile(c.ConfigPath, []byte(configYAML), 0o600); err != nil {
		t.Fatalf("write control plane config: %v", err)
	}
	if _, ok := flagValue(args, "--grpc-tls"); !ok {
		args = append([]string{"--grpc-tls=off"}, args...)
	}
	if _, ok := flagValue(args, "--shutdown-delay"); !ok {
		args = append([]string{"--shutdown-delay=0s"}, args...)
	}
	err := startWithPorts(3, func(ports []int) error {
		c.Addr = fmt.Sprintf("127.0.0.1:%d", ports[0])
		c.WebhookAddr = fmt.Sprintf("127.0.0.1:%d", ports[1])
		c.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", ports[2])
		c.args = append([]string{
			"--kubeconfig", kubeconfig, "--config", c.ConfigPath, "--grpc-listen", c.Addr,
			"--webhook-listen", c.WebhookAddr, "--webhook-url", "https://" + c.WebhookAddr + "/mutate-pods",
			"--http-listen", c.HTTPAddr, "--log-level", "debug",
		}, args...)
		return c.start()
	})
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	c.stopOnCleanup(t, "in-cluster controlplane")
	return c
}
