package controller

import (
	"maps"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// Names and paths inside the edge's pod.
const (
	// ContainerName is the edge's container.
	ContainerName = "edge"
	// ServicePortName names the Service's only port.
	ServicePortName = "registry"
	// TokenDir is where the projected ServiceAccount token is mounted;
	// TokenPath is the file the edge reads (--control-plane-token-file).
	TokenDir  = "/var/run/secrets/k8s-selfhost-repo"
	TokenPath = TokenDir + "/token"
	// CacheDir is the emptyDir the edge caches on when ExtraArgs name no
	// --storage.
	CacheDir = "/var/lib/selfhost-edge"
	// TokenExpirationSeconds is the projected token's lifetime; kubelet
	// rotates it at 80%.
	TokenExpirationSeconds = 3600

	volToken = "control-plane-token"
	volCache = "cache"
	volTmp   = "tmp"
	tmpDir   = "/tmp"
)

// ManagedLabels are the labels every object the controller creates
// carries; ManagedSelector, a subset, is how it finds them.
func ManagedLabels() map[string]string {
	return map[string]string{
		kubecontract.NameLabel:      kubecontract.NameValue,
		kubecontract.ComponentLabel: kubecontract.EdgeComponent,
		kubecontract.ManagedByLabel: kubecontract.ManagedByValue,
	}
}

// PodSelector selects the edge's pods (the Deployment's selector and the
// Service's). It is a subset of ManagedLabels and never changes: a
// Deployment's selector is immutable.
func PodSelector() map[string]string {
	return map[string]string{
		kubecontract.NameLabel:      kubecontract.NameValue,
		kubecontract.ComponentLabel: kubecontract.EdgeComponent,
	}
}

// objectLabels are the template's extra labels plus ManagedLabels.
func (t EdgeTemplate) objectLabels() map[string]string {
	l := maps.Clone(t.Labels)
	if l == nil {
		l = map[string]string{}
	}
	maps.Copy(l, ManagedLabels())
	return l
}

func (t EdgeTemplate) meta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, Labels: t.objectLabels()}
}

// desiredServiceAccount is the edge's ServiceAccount: no automounted
// token (the edge uses a projected one of the control plane's audience).
func (t EdgeTemplate) desiredServiceAccount(ns string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		ObjectMeta:                   t.meta(ns, kubecontract.EdgeName),
		AutomountServiceAccountToken: ptr.To(false),
	}
}

// desiredService is the edge's NodePort Service; nodePort 0 lets the
// apiserver allocate one. The traffic policy is Cluster so that
// 127.0.0.1:<nodePort> works on every node, not only the edge's.
func (t EdgeTemplate) desiredService(ns string, nodePort int32) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: t.meta(ns, kubecontract.EdgeName),
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeNodePort,
			Selector:              PodSelector(),
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster,
			Ports: []corev1.ServicePort{{
				Name:       ServicePortName,
				Protocol:   corev1.ProtocolTCP,
				Port:       DefaultContainerPort,
				TargetPort: intstr.FromInt32(t.ContainerPort),
				NodePort:   nodePort,
			}},
		},
	}
}

// desiredSecret is the pull Secret for host with token.
func (t EdgeTemplate) desiredSecret(ns, host, token string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: t.meta(ns, kubecontract.PullSecretName),
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: dockerConfigJSON(host, token)},
	}
}

// edgeArgs are the edge's arguments: the controller's flags, then
// ExtraArgs. Without a --storage in ExtraArgs the edge caches on the
// cache emptyDir; with one and no --state-dir, the state goes to /tmp
// (the root filesystem is read-only). nodePort is the edge Service's: the
// edge advertises EdgeHost(nodePort), the address the injector writes
// into pods, instead of its wildcard listen address (0: not known yet,
// no --advertise-address).
func (t EdgeTemplate) edgeArgs(nodePort int32) []string {
	args := []string{
		"--listen=:" + strconv.Itoa(int(t.ContainerPort)),
		"--namespace=$(POD_NAMESPACE)",
		"--pod-name=$(POD_NAME)",
		"--control-plane=" + t.ControlPlaneAddress,
		"--control-plane-token-file=" + TokenPath,
	}
	if nodePort != 0 {
		args = append(args, "--advertise-address="+EdgeHost(nodePort))
	}
	if t.ControlPlaneCA {
		args = append(args, "--control-plane-ca-file="+CAPath)
	}
	switch {
	case !t.ownStorage():
		args = append(args, "--storage="+CacheDir)
	case !hasFlag(t.ExtraArgs, "state-dir"):
		args = append(args, "--state-dir="+tmpDir+"/edge-state")
	}
	return append(args, t.ExtraArgs...)
}

// ownStorage reports whether ExtraArgs choose the storage (e.g. S3).
func (t EdgeTemplate) ownStorage() bool { return hasFlag(t.ExtraArgs, "storage") }

// desiredDeployment is the edge's Deployment in ns, whose Service has
// nodePort.
func (t EdgeTemplate) desiredDeployment(ns string, nodePort int32) *appsv1.Deployment {
	podLabels := t.objectLabels()
	return &appsv1.Deployment{
		ObjectMeta: t.meta(ns, kubecontract.EdgeName),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(t.Replicas),
			Selector: &metav1.LabelSelector{MatchLabels: PodSelector()},
			Strategy: rolloutStrategy(),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec:       t.podSpec(nodePort),
			},
		},
	}
}

func (t EdgeTemplate) podSpec(nodePort int32) corev1.PodSpec {
	volumes := []corev1.Volume{
		{Name: volToken, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptr.To[int32](0o444),
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience:          t.TokenAudience,
				ExpirationSeconds: ptr.To[int64](TokenExpirationSeconds),
				Path:              "token",
			}}},
		}}},
		{Name: volTmp, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	mounts := []corev1.VolumeMount{
		{Name: volToken, MountPath: TokenDir, ReadOnly: true},
		{Name: volTmp, MountPath: tmpDir},
	}
	if !t.ownStorage() {
		volumes = append(volumes, corev1.Volume{Name: volCache, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		mounts = append(mounts, corev1.VolumeMount{Name: volCache, MountPath: CacheDir})
	}
	if t.ControlPlaneCA {
		v, m := caVolume()
		volumes, mounts = append(volumes, v), append(mounts, m)
	}
	return corev1.PodSpec{
		ServiceAccountName:           kubecontract.EdgeName,
		AutomountServiceAccountToken: ptr.To(false),
		EnableServiceLinks:           ptr.To(false),
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr.To(true),
			RunAsUser:      ptr.To(t.RunAsUser),
			RunAsGroup:     ptr.To(t.RunAsUser),
			FSGroup:        ptr.To(t.RunAsUser),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Containers:                    []corev1.Container{t.container(mounts, nodePort)},
		Volumes:                       volumes,
		Affinity:                      spreadAcrossNodes(),
		TerminationGracePeriodSeconds: ptr.To(t.terminationGracePeriod()),
	}
}

// container is the edge container. Every field the apiserver would
// default is set explicitly, so that a stored Deployment compares equal
// to the desired one.
func (t EdgeTemplate) container(mounts []corev1.VolumeMount, nodePort int32) corev1.Container {
	probe := func(path string, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromInt32(t.ContainerPort), Scheme: corev1.URISchemeHTTP,
			}},
			TimeoutSeconds:   2,
			PeriodSeconds:    10,
			SuccessThreshold: 1,
			FailureThreshold: failures,
		}
	}
	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path},
		}}
	}
	return corev1.Container{
		Name:            ContainerName,
		Image:           t.Image,
		ImagePullPolicy: t.ImagePullPolicy,
		Args:            t.edgeArgs(nodePort),
		Env:             []corev1.EnvVar{fieldEnv("POD_NAMESPACE", "metadata.namespace"), fieldEnv("POD_NAME", "metadata.name")},
		Ports: []corev1.ContainerPort{{
			Name: ServicePortName, ContainerPort: t.ContainerPort, Protocol: corev1.ProtocolTCP,
		}},
		Resources:      *t.Resources.DeepCopy(),
		VolumeMounts:   mounts,
		StartupProbe:   t.startupProbe(),
		ReadinessProbe: probe("/readyz", 3),
		LivenessProbe:  probe("/healthz", 6),
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			RunAsNonRoot:             ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
	}
}
