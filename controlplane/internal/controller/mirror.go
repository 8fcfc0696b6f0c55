package controller

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// WithMirror makes namespace (the release namespace) get an edge of its
// own without the opt-in label: the cluster-wide mirror for clients the
// webhook does not reach (Docker daemons, CI runners, containerd mirrors
// in hosts.toml) through its NodePort. It is a tenant like any other: its
// own pull token (unless auth is false: then it serves anyone who reaches
// the port), its own proofs of access, never another namespace's private
// content. docs/kubernetes.md, "A cluster-wide mirror".
func WithMirror(namespace string, auth bool) Option {
	return func(c *Controller) { c.mirrorNS, c.mirrorAuth = namespace, auth }
}

// WithMirrorTLS makes the mirror serve TLS with the kubernetes.io/tls
// Secret secretName of its namespace (tls.crt, tls.key), mounted into its
// pods: clients that reach it over the network then need no
// insecure-registries entry. The edge re-reads the pair when kubelet
// updates the mount.
func WithMirrorTLS(secretName string) Option {
	return func(c *Controller) { c.mirrorTLSSecret = secretName }
}

// mirrorTLSDir is where the mirror's certificate is mounted.
const mirrorTLSDir = "/etc/selfhost/mirror-tls"

// desiredDeployment is the template's Deployment, with the mirror's TLS
// when ns is the mirror's namespace and WithMirrorTLS was given.
func (c *Controller) desiredDeployment(ns string, nodePort int32) *appsv1.Deployment {
	d := c.tmpl.desiredDeployment(ns, nodePort)
	if !c.isMirror(ns) || c.mirrorTLSSecret == "" {
		return d
	}
	spec := &d.Spec.Template.Spec
	spec.Volumes = append(spec.Volumes, corev1.Volume{Name: "mirror-tls", VolumeSource: corev1.VolumeSource{
		// 0644 is what the apiserver would default to; spelled out so the
		// drift check compares like with like.
		Secret: &corev1.SecretVolumeSource{SecretName: c.mirrorTLSSecret, DefaultMode: ptr.To(int32(0o644))},
	}})
	edge := &spec.Containers[0]
	edge.VolumeMounts = append(edge.VolumeMounts, corev1.VolumeMount{Name: "mirror-tls", MountPath: mirrorTLSDir, ReadOnly: true})
	edge.Args = append(edge.Args, "--tls-cert="+mirrorTLSDir+"/tls.crt", "--tls-key="+mirrorTLSDir+"/tls.key")
	for _, p := range []*corev1.Probe{edge.StartupProbe, edge.ReadinessProbe, edge.LivenessProbe} {
		if p != nil && p.HTTPGet != nil {
			p.HTTPGet.Scheme = corev1.URISchemeHTTPS
		}
	}
	return d
}

// optedIn reports whether ns gets an edge: opted in by its label, or the
// mirror's namespace.
func (c *Controller) optedIn(ns *corev1.Namespace) bool {
	if c.mirrorNS != "" && ns.Name == c.mirrorNS {
		return ns.DeletionTimestamp == nil
	}
	return OptedIn(ns)
}

// isMirror reports whether ns is the mirror's namespace.
func (c *Controller) isMirror(ns string) bool { return c.mirrorNS != "" && ns == c.mirrorNS }
