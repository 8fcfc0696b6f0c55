package harness

// Configuration files of the test cluster's node components. Each keeps
// its state in the cluster's directory where the component allows it;
// node_host.go lists the fixed paths that remain.

import (
	"fmt"
	"path/filepath"
)

// Addresses and ports inside the node's network namespace. The namespace
// is the cluster's own, so fixed ports cannot collide with anything.
const (
	// PodCIDR is the bridge's range: every pod gets an address here. It
	// is outside 10.200.0.0–10.249.255.255, where NewNetns picks the node's
	// veth addresses.
	PodCIDR = "10.88.0.0/24"
	// ClusterDomain is the DNS domain of Services.
	ClusterDomain = "cluster.local"
	// ClusterNodeName is the name of the one node.
	ClusterNodeName = "selfhost-test-node"
	// KubernetesServiceIP is the ClusterIP of the kubernetes Service.
	KubernetesServiceIP = "10.96.0.1"

	apiserverPort = 6443
	etcdPort      = 2379
	etcdPeerPort  = 2380
	// RegistryPort is the port of the cluster's docker-registry on every
	// address of the node (127.0.0.1 for containerd, the node IP for pods
	// and for the test in the root namespace).
	RegistryPort = 5000
)

// cniConfig is the node's CNI network: a bridge with the node as the
// pods' gateway (hairpin so a pod reaches itself through its Service,
// masquerade so pods reach the root namespace's end of the veth), IPs from
// host-local with its data in the cluster's directory, and portmap for
// hostPort.
func cniConfig(ipamDir string) string {
	return fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "selfhost-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, ipamDir, PodCIDR)
}

// kubeletConfig is the KubeletConfiguration of this machine's node:
// cgroup v1 with the cgroupfs driver (no systemd here), swap allowed, a
// cgroupRoot of its own, pod logs in the cluster's directory, x509 (the
// apiserver's kubelet-client certificate) and webhook authentication so
// that logs and exec work, eviction thresholds low enough that a full
// disk of other tests does not taint the node, and images never
// garbage-collected during a test.
func kubeletConfig(dir, sock, nodeIP string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /%s
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%s
clusterDNS: [%q]
clusterDomain: %s
resolvConf: %q
podLogsDir: %q
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %q}
authorization:
  mode: Webhook
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
  imagefs.inodesFree: "1%%"
nodeStatusUpdateFrequency: 2s
syncFrequency: 5s
fileCheckFrequency: 5s
`, clusterCgroup, sock, nodeIP, ClusterDomain, filepath.Join(dir, "resolv.conf"),
		filepath.Join(dir, "pod-logs"), nodeIP, filepath.Join(dir, "ca.crt"))
}

// kubeProxyConfig is the KubeProxyConfiguration. iptables mode forwards
// NodePorts on 127.0.0.1 (localhostNodePorts), which is how kubelet
// reaches a registry in the cluster over plain HTTP. Every conntrack
// setting is 0 so that kube-proxy leaves the machine-wide netfilter
// sysctls alone; masqueradeAll makes Service traffic between pods on the
// one bridge symmetric whatever br_netfilter does in the namespace.
func kubeProxyConfig(kubeconfig, mode string) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %q
mode: %s
hostnameOverride: %s
clusterCIDR: %s
bindAddress: 0.0.0.0
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables:
  localhostNodePorts: true
  masqueradeAll: true
  minSyncPeriod: 0s
  syncPeriod: 30s
nftables:
  masqueradeAll: true
  minSyncPeriod: 0s
  syncPeriod: 30s
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
`, kubeconfig, mode, ClusterNodeName, PodCIDR)
}

// corefile serves the cluster domain (and reverse lookups) from the
// apiserver through the kubernetes plugin. Every other name gets NXDOMAIN,
// as a real cluster's upstream would answer for names that do not exist:
// nothing outside the machine may be reached, and a SERVFAIL would make
// clients (gRPC's TXT lookup, resolvers walking the search list) behave
// unlike on a real cluster.
func corefile(kubeconfig string) string {
	return fmt.Sprintf(`%s:53 in-addr.arpa:53 ip6.arpa:53 {
    errors
    log
    ready 127.0.0.1:8181
    kubernetes %s in-addr.arpa ip6.arpa {
        kubeconfig %s selfhost-test
        pods insecure
        ttl 5
    }
    cache 5
}
.:53 {
    errors
    log
    template ANY ANY {
        rcode NXDOMAIN
    }
}
`, ClusterDomain, ClusterDomain, kubeconfig)
}
