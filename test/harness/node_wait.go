package harness

// Readiness of the test cluster, and reaching the node's loopback from
// the test: NodePorts on 127.0.0.1 exist only inside the node's network
// namespace, so the test dials from there (Netns.DialContext).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// clusterStartTimeout bounds the wait for a usable cluster: ~15 s on a
// quiet machine, several times that on 2 shared cores under load.
const clusterStartTimeout = 3 * time.Minute

// registryServiceName is the NodePort Service (in kube-system) in front of
// the node's docker-registry: StartCluster's proof that kube-proxy
// forwards NodePorts on 127.0.0.1, and a registry address of the same
// shape as the edges' (127.0.0.1:<nodePort>).
const registryServiceName = "harness-registry"

// waitReady waits for the node, the default ServiceAccount, kube-proxy
// and DNS, failing early when a component exits.
func (c *Cluster) waitReady(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterStartTimeout)
	defer cancel()
	steps := []struct {
		what  string
		check func(context.Context) error
	}{
		{"node Ready", c.nodeReady},
		{"ServiceAccount default/default and ConfigMap kube-root-ca.crt", c.defaultServiceAccount},
		{"kube-proxy forwarding the registry's NodePort (127.0.0.1 in iptables mode, else the node's address)", c.registryNodePortReady(t)},
		{"DNS answering kubernetes.default.svc", c.dnsReady},
	}
	for _, s := range steps {
		start := time.Now()
		if err := c.poll(ctx, s.check); err != nil {
			t.Fatalf("cluster: waiting for %s: %v", s.what, err)
		}
		t.Logf("cluster: %s after %v", s.what, time.Since(start).Round(10*time.Millisecond))
	}
}

// poll runs check until it succeeds, a component exits or ctx ends.
func (c *Cluster) poll(ctx context.Context, check func(context.Context) error) error {
	var last error
	for {
		c.mu.Lock()
		procs := append([]*Process(nil), c.procs...)
		c.mu.Unlock()
		for _, p := range procs {
			if p.Exited() {
				return fmt.Errorf("%s exited (%v); log:\n%s", p.Name, p.waitErr, p.LogTail(8<<10))
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		last = check(cctx)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: last: %v", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cluster) nodeReady(ctx context.Context) error {
	n, err := c.Client.CoreV1().Nodes().Get(ctx, ClusterNodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			if cond.Status == corev1.ConditionTrue {
				return nil
			}
			return fmt.Errorf("node %s: Ready=%s: %s", n.Name, cond.Status, cond.Message)
		}
	}
	return fmt.Errorf("node %s has no Ready condition yet", n.Name)
}

func (c *Cluster) defaultServiceAccount(ctx context.Context) error {
	if _, err := c.Client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{}); err != nil {
		return err
	}
	_, err := c.Client.CoreV1().ConfigMaps(metav1.NamespaceDefault).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
	return err
}

// registryNodePortReady creates the registry's NodePort Service with a
// hand-made EndpointSlice (the registry is a node process, not a pod) and
// returns a check that GETs /v2/ through 127.0.0.1:<nodePort> on the node
// — in iptables mode; the other modes do not forward loopback NodePorts,
// so there it goes through <NodeIP>:<nodePort>.
func (c *Cluster) registryNodePortReady(t testing.TB) func(context.Context) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc, err := c.Client.CoreV1().Services(metav1.NamespaceSystem).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: registryServiceName},
		Spec: corev1.ServiceSpec{
			Type:  corev1.ServiceTypeNodePort,
			Ports: []corev1.ServicePort{{Name: "http", Port: RegistryPort, Protocol: corev1.ProtocolTCP}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("cluster: create Service %s: %v", registryServiceName, err)
	}
	_, err = c.Client.DiscoveryV1().EndpointSlices(metav1.NamespaceSystem).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:   registryServiceName,
			Labels: map[string]string{discoveryv1.LabelServiceName: registryServiceName, discoveryv1.LabelManagedBy: "selfhost-test-harness"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{c.NodeIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(RegistryPort)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("cluster: create EndpointSlice %s: %v", registryServiceName, err)
	}
	c.RegistryNodePort = int(svc.Spec.Ports[0].NodePort)
	client := c.Netns.HTTPClient()
	host := "127.0.0.1"
	if c.ProxyMode != "iptables" {
		host = c.NodeIP
	}
	url := fmt.Sprintf("http://%s/v2/", net.JoinHostPort(host, strconv.Itoa(c.RegistryNodePort)))
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// dnsReady resolves the kubernetes Service through the node's CoreDNS.
func (c *Cluster) dnsReady(ctx context.Context) error {
	addrs, err := c.Resolver().LookupHost(ctx, "kubernetes.default.svc."+ClusterDomain)
	if err != nil {
		return err
	}
	if len(addrs) != 1 || addrs[0] != KubernetesServiceIP {
		return fmt.Errorf("kubernetes.default.svc resolves to %v, want %s", addrs, KubernetesServiceIP)
	}
	return nil
}

// Resolver asks the cluster's DNS server (CoreDNS on <NodeIP>:53, the
// pods' nameserver) from the test's namespace.
func (c *Cluster) Resolver() *net.Resolver {
	server := net.JoinHostPort(c.NodeIP, "53")
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, server)
	}}
}

// RegistryViaNodePort is the node's registry behind its NodePort Service
// as kubelet reaches it: 127.0.0.1:<nodePort>.
func (c *Cluster) RegistryViaNodePort() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.RegistryNodePort))
}

// HTTPClient is an HTTP client whose connections start inside the
// namespace, e.g. to 127.0.0.1:<nodePort> of a node. Addresses must be IPs
// (no name is resolved inside the namespace).
func (n *Netns) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: n.DialContext, DisableKeepAlives: true}}
}

// DialContext opens a connection from inside the namespace: the socket is
// created on a thread switched into it (setns), and a socket keeps its
// namespace for life. addr must be an IP address and port.
func (n *Netns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	// A goroutine of its own: if switching back fails, the thread stays
	// locked and Go discards it when the goroutine ends.
	go func() {
		runtime.LockOSThread()
		conn, back, err := n.dialIn(ctx, network, addr)
		if back {
			runtime.UnlockOSThread()
		}
		ch <- result{conn, err}
	}()
	r := <-ch
	return r.conn, r.err
}

// dialIn dials inside the namespace on the current (locked) thread;
// back reports whether the thread is in its original namespace again.
func (n *Netns) dialIn(ctx context.Context, network, addr string) (conn net.Conn, back bool, err error) {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, fmt.Errorf("dial in %s: %w", n.Name, err)
	}
	defer func() { _ = orig.Close() }() // a namespace handle for setns, never written
	target, err := os.Open("/run/netns/" + n.Name)
	if err != nil {
		return nil, true, fmt.Errorf("dial in %s: %w", n.Name, err)
	}
	defer func() { _ = target.Close() }() // a namespace handle for setns, never written
	if err := setns(target); err != nil {
		return nil, true, fmt.Errorf("dial in %s: setns: %w", n.Name, err)
	}
	var d net.Dialer
	conn, err = d.DialContext(ctx, network, addr)
	if serr := setns(orig); serr != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, false, errors.Join(err, fmt.Errorf("dial in %s: setns back: %w", n.Name, serr))
	}
	return conn, true, err
}

func setns(f *os.File) error {
	return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
}
