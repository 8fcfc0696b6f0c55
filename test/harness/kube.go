package harness

// A real kube-apiserver (built from tools/k8s/go.mod) backed by its own
// Debian etcd, both on 127.0.0.1, for controller, webhook and RBAC tests.
// There is no kubelet, scheduler or kube-controller-manager: no pods run,
// namespaces are never finalized after a delete, and no "default"
// ServiceAccount or kube-root-ca.crt ConfigMap appears by itself.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

const hintKube = "run test/all.sh once, or: apt-get install etcd-server and build tools/k8s (see test/all.sh)"

// EtcdBin is Debian's etcd (package etcd-server; env ETCD).
func EtcdBin(t testing.TB) string { return Binary(t, "etcd", "ETCD", hintKube) }

// KubeAPIServerBin is kube-apiserver (env KUBE_APISERVER, else PATH or
// bin/tools/kube-apiserver, which test/all.sh builds from tools/k8s).
func KubeAPIServerBin(t testing.TB) string {
	return Binary(t, "kube-apiserver", "KUBE_APISERVER", hintKube)
}

// Kube is a kube-apiserver backed by its own etcd, on 127.0.0.1.
type Kube struct {
	URL        string               // https://127.0.0.1:PORT
	Config     *rest.Config         // admin: a static token in the system:masters group
	Client     kubernetes.Interface // built from Config
	Kubeconfig string               // path of an admin kubeconfig file for kubectl/helm-like tools
	Dir        string               // where its data, certs and logs live

	// Etcd is the etcd process (its log is in Dir).
	Etcd *Process

	bin  string
	args []string
	wrap []string     // command prefix, e.g. nsenter into a namespace
	pki  kubePKI      // CA and tokens, for the cluster's components
	http *http.Client // admin client for /readyz

	mu  sync.Mutex
	api *Process // the current apiserver; replaced by StartAPIServer
}

// StartKube starts etcd (Debian etcd-server; env ETCD) and kube-apiserver
// (env KUBE_APISERVER, else bin/tools/kube-apiserver) on free loopback
// ports, waits until /readyz answers, and stops both with t.Cleanup. It
// fails the test (t.Fatal) when a binary is missing.
//
// The serving certificate is signed by a CA of this instance (in Config
// and Kubeconfig); ServiceAccount tokens are ES256, issuer
// https://kubernetes.default.svc, which is also the default audience.
func StartKube(t testing.TB) *Kube {
	t.Helper()
	return startKube(t, kubeSetup{})
}

// kubeSetup is what differs between the loopback apiserver of StartKube
// and the one of a cluster in a network namespace (StartCluster).
type kubeSetup struct {
	// wrap prefixes every command (nsenter into the node's namespace).
	wrap []string
	// host is the address the apiserver advertises and clients dial; the
	// ports are fixed when set (a namespace of the test's own has no
	// other listeners), else free loopback ports are picked.
	host                     string
	etcdPort, etcdPeer, port int
	bind, endpointReconciler string
	extraArgs                []string
	pki                      pkiOptions
}

func startKube(t testing.TB, s kubeSetup) *Kube {
	t.Helper()
	etcdBin, apiBin := EtcdBin(t), KubeAPIServerBin(t)
	k := &Kube{Dir: t.TempDir(), bin: apiBin, wrap: s.wrap}
	if s.host == "" {
		s.host, s.bind, s.endpointReconciler = "127.0.0.1", "127.0.0.1", "none"
	}
	s.pki.ips = append(s.pki.ips, net.ParseIP(s.host))
	pki, err := writeKubePKI(k.Dir, s.pki)
	if err != nil {
		t.Fatalf("kube: %v", err)
	}
	k.pki = pki
	// fixed runs start once with the setup's ports, else retries with
	// fresh loopback ports when one was taken in the meantime.
	fixed := func(n int, ports []int, start func([]int) error) error {
		if s.port != 0 {
			return start(ports)
		}
		return startWithPorts(n, start)
	}

	var etcdURL string
	var etcd *Process
	err = fixed(2, []int{s.etcdPort, s.etcdPeer}, func(ports []int) error {
		etcdURL = fmt.Sprintf("http://%s:%d", s.host, ports[0])
		p, err := startEtcd(s.wrap, etcdBin, k.Dir, etcdURL, fmt.Sprintf("http://%s:%d", s.host, ports[1]))
		etcd = p
		return err
	})
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	k.Etcd = etcd
	cleanupProcess(t, etcd)

	err = fixed(1, []int{s.port}, func(ports []int) error {
		if err := k.setAddress(s.host, ports[0], pki); err != nil {
			return err
		}
		k.args = append(kubeAPIServerArgs(k.Dir, s.bind, s.host, ports[0], etcdURL, s.endpointReconciler), s.extraArgs...)
		if s.pki.kubeletClient {
			k.args = append(k.args, "--kubelet-client-certificate="+filepath.Join(k.Dir, "kubelet-client.crt"),
				"--kubelet-client-key="+filepath.Join(k.Dir, "kubelet-client.key"))
		}
		return k.start(true)
	})
	if err != nil {
		t.Fatalf("start kube-apiserver: %v", err)
	}
	t.Cleanup(func() {
		k.mu.Lock()
		p := k.api
		k.mu.Unlock()
		p.Stop()
		if t.Failed() {
			t.Logf("---- log of kube-apiserver (%s), last 64 KiB ----\n%s\n---- end of kube-apiserver log ----", p.LogPath, p.LogTail(64<<10))
		}
	})
	return k
}

// kubeAPIServerArgs are the flags of a single apiserver: static tokens,
// RBAC, TokenRequest with the issuer as default audience, NodePort
// allocation. On loopback without nodes the endpoint reconciler is "none"
// (there is no other apiserver and no node address to publish); a cluster
// publishes its node address with the default "lease" reconciler.
func kubeAPIServerArgs(dir, bind, advertise string, port int, etcdURL, reconciler string) []string {
	f := func(name string) string { return filepath.Join(dir, name) }
	return []string{
		"--bind-address=" + bind,
		"--advertise-address=" + advertise,
		fmt.Sprintf("--secure-port=%d", port),
		"--endpoint-reconciler-type=" + reconciler,
		"--etcd-servers=" + etcdURL,
		"--cert-dir=" + f("apiserver-certs"),
		"--tls-cert-file=" + f("serving.crt"),
		"--tls-private-key-file=" + f("serving.key"),
		"--token-auth-file=" + f("tokens.csv"),
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + f("sa.pub"),
		"--service-account-signing-key-file=" + f("sa.key"),
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--service-node-port-range=30000-32767",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1",
	}
}

// ServiceCIDR is the Service ClusterIP range of every apiserver the
// harness starts; the first address (10.96.0.1) is the kubernetes Service.
const ServiceCIDR = "10.96.0.0/16"

// setAddress fills URL, Config, Client and the kubeconfig file for port.
func (k *Kube) setAddress(host string, port int, pki kubePKI) error {
	k.URL = "https://" + net.JoinHostPort(host, strconv.Itoa(port))
	k.Config = &rest.Config{
		Host:            k.URL,
		BearerToken:     pki.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: pki.caPEM},
		UserAgent:       "selfhost-test-harness",
		QPS:             200,
		Burst:           400,
	}
	k.Kubeconfig = filepath.Join(k.Dir, "kubeconfig")
	var err error
	if k.http, err = rest.HTTPClientFor(k.Config); err != nil {
		return err
	}
	if k.Client, err = kubernetes.NewForConfig(k.Config); err != nil {
		return err
	}
	return writeKubeconfig(k.Kubeconfig, k.Config)
}

// start runs the apiserver with k.args and waits for /readyz (and, on the
// first start, for the "default" namespace that a post-start hook creates
// shortly after).
func (k *Kube) start(first bool) error {
	p, err := startProcessIn(k.wrap, "kube-apiserver", k.bin, k.args, nil, k.Dir)
	if err != nil {
		return err
	}
	err = waitReady(p, func(ctx context.Context) error {
		if err := k.readyz(ctx); err != nil {
			return err
		}
		if first {
			_, err := k.Client.CoreV1().Namespaces().Get(ctx, metav1.NamespaceDefault, metav1.GetOptions{})
			return err
		}
		return nil
	})
	if err != nil {
		p.Stop()
		return portError(p, err)
	}
	k.mu.Lock()
	k.api = p
	k.mu.Unlock()
	return nil
}

func (k *Kube) readyz(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.URL+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := k.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /readyz: %s", resp.Status)
	}
	return nil
}

// StopAPIServer stops the apiserver gracefully (SIGTERM); etcd keeps
// running. It is a no-op when the apiserver is already stopped.
func (k *Kube) StopAPIServer() {
	k.mu.Lock()
	p := k.api
	k.mu.Unlock()
	p.Stop()
}

// StartAPIServer starts the apiserver again after StopAPIServer, on the
// same port and with the same certificates, tokens and etcd, so URL,
// Config, Client and Kubeconfig stay valid. A port taken in the meantime
// is retried for a while instead of moving. It fails the test if the
// apiserver is still running.
func (k *Kube) StartAPIServer(t testing.TB) {
	t.Helper()
	k.mu.Lock()
	running := !k.api.Exited()
	k.mu.Unlock()
	if running {
		t.Fatalf("kube: StartAPIServer while the apiserver on %s is running", k.URL)
	}
	var err error
	_ = testkit.Poll(context.Background(), 20*time.Second, func() error {
		if err = k.start(false); err != nil && strings.Contains(err.Error(), "address already in use") {
			return err // taken: try again
		}
		return nil // started, or failed for good
	})
	if err != nil {
		t.Fatalf("start kube-apiserver again on %s: %v", k.URL, err)
	}
}

// ServiceAccountToken creates namespace ns and ServiceAccount sa when
// missing and returns a token from the TokenRequest API for them;
// audiences nil means the apiserver's default audience. ttl 0 means the
// default (1 h); the apiserver refuses a ttl under 10 minutes.
func (k *Kube) ServiceAccountToken(t testing.TB, ns, sa string, audiences []string, ttl time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	core := k.Client.CoreV1()
	_, err := core.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kube: create namespace %s: %v", ns, err)
	}
	_, err = core.ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kube: create serviceaccount %s/%s: %v", ns, sa, err)
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audiences}}
	if ttl > 0 {
		secs := int64(ttl / time.Second)
		req.Spec.ExpirationSeconds = &secs
	}
	tr, err := core.ServiceAccounts(ns).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kube: token for serviceaccount %s/%s: %v", ns, sa, err)
	}
	return tr.Status.Token
}

// ClientFor returns a clientset that authenticates with token (e.g. a
// ServiceAccount token), for RBAC tests.
func (k *Kube) ClientFor(t testing.TB, token string) kubernetes.Interface {
	t.Helper()
	cfg := rest.AnonymousClientConfig(k.Config)
	cfg.BearerToken = token
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("kube: client for token: %v", err)
	}
	return c
}

// ServiceAccountUser is the user name and groups the apiserver gives a
// token of ServiceAccount ns/sa, for a SubjectAccessReview about it.
func ServiceAccountUser(ns, sa string) (user string, groups []string) {
	return "system:serviceaccount:" + ns + ":" + sa,
		[]string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
}

// WaitAllowed waits until a SubjectAccessReview allows user with groups
// attrs. RBAC reads roles and bindings from an informer, so a binding
// just created takes effect a moment later; a test that then acts as the
// subject waits here first so that it does not race the informer. It
// fails the test when the review errs or is still denied after a minute.
func (k *Kube) WaitAllowed(t testing.TB, user string, groups []string, attrs *authorizationv1.ResourceAttributes) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	review := &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: groups, ResourceAttributes: attrs},
	}
	for {
		sar, err := k.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("kube: SubjectAccessReview for %s: %v", user, err)
		}
		if sar.Status.Allowed {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kube: %s is still not allowed %+v (%s)", user, *attrs, sar.Status.Reason)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// startEtcd starts a single-member etcd with a fresh data directory and
// waits for /health.
func startEtcd(wrap []string, bin, dir, clientURL, peerURL string) (*Process, error) {
	data := filepath.Join(dir, "etcd-data")
	if err := os.RemoveAll(data); err != nil { // a previous attempt's
		return nil, err
	}
	args := []string{
		"--name=kube",
		"--data-dir=" + data,
		"--listen-client-urls=" + clientURL,
		"--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=kube=" + peerURL,
		"--initial-cluster-state=new",
		"--logger=zap",
		"--log-outputs=stderr",
	}
	p, err := startProcessIn(wrap, "etcd", bin, args, etcdEnv(), dir)
	if err != nil {
		return nil, err
	}
	err = waitReady(p, func(ctx context.Context) error { return httpStatus(ctx, clientURL+"/health", http.StatusOK) })
	if err != nil {
		p.Stop()
		return nil, portError(p, err)
	}
	return p, nil
}

// etcdEnv blanks every ETCD_* variable of the parent (etcd reads them as
// flags; an empty value is ignored) and sets ETCD_UNSUPPORTED_ARCH where
// etcd 3.4 refuses to start without it (anything but amd64 and ppc64le).
func etcdEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "ETCD_") {
			env = append(env, k+"=")
		}
	}
	if a := runtime.GOARCH; a != "amd64" && a != "ppc64le" {
		env = append(env, "ETCD_UNSUPPORTED_ARCH="+a)
	}
	return env
}
