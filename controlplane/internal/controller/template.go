package controller

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// Defaults of EdgeTemplate.
const (
	DefaultContainerPort   = 5000
	DefaultReplicas        = 2
	DefaultRunAsUser       = 65532
	DefaultImagePullPolicy = corev1.PullIfNotPresent
)

// EdgeTemplate is what every namespace's edge Deployment is made from.
// Zero values take the defaults above; Validate reports the first bad
// field by name.
type EdgeTemplate struct {
	// Image of the edge container (required).
	Image string
	// ImagePullPolicy of the edge container; default IfNotPresent.
	ImagePullPolicy corev1.PullPolicy
	// Resources of the edge container.
	Resources corev1.ResourceRequirements
	// ControlPlaneAddress is the gRPC address (host:port) the edge dials,
	// e.g. "selfhost-controlplane.selfhost-system.svc:9090" (required).
	ControlPlaneAddress string
	// TokenAudience is the audience of the projected ServiceAccount token
	// the edge presents to the control plane (required).
	TokenAudience string
	// ContainerPort is the edge's registry port; default 5000.
	ContainerPort int32
	// Replicas of the edge Deployment; default 2, so that a node drain or
	// a rollout never leaves the namespace without an edge.
	Replicas int32
	// RunAsUser is the edge's non-root UID (and GID, fsGroup); default
	// 65532.
	RunAsUser int64
	// ExtraArgs are appended to the edge's arguments, e.g. the storage
	// flags (--storage=s3://bucket/prefix --s3-endpoint=…, or
	// --storage=control-plane for the control plane's storage.s3). Without a
	// --storage flag the edge caches on an emptyDir. The flags the
	// controller sets itself (--listen, --namespace, --pod-name,
	// --control-plane, --control-plane-token-file, --advertise-address)
	// are refused here. --shutdown-delay and --shutdown-timeout, when
	// given, set the pod's grace period.
	ExtraArgs []string
	// ControlPlaneCA: the control plane serves gRPC over TLS; the edge
	// mounts the CA ConfigMap (CAConfigMapName, which the controller keeps
	// when given WithCABundle) and verifies the control plane with
	// --control-plane-ca-file=CAPath.
	ControlPlaneCA bool
	// Labels are added to every object and to the edge's pods; they may
	// not override the kubecontract labels.
	Labels map[string]string
}

// ownedFlags are the edge flags the controller sets itself.
var ownedFlags = []string{"listen", "namespace", "pod-name", "control-plane", "control-plane-token-file", "advertise-address", "control-plane-ca-file"}

// reservedLabels are the label keys the controller sets itself.
var reservedLabels = []string{kubecontract.NameLabel, kubecontract.ComponentLabel, kubecontract.ManagedByLabel}

// Validate reports the first invalid field of t, by name.
func (t EdgeTemplate) Validate() error {
	_, err := t.withDefaults()
	return err
}

// withDefaults validates t and fills in its defaults.
func (t EdgeTemplate) withDefaults() (EdgeTemplate, error) {
	if t.Image == "" || strings.ContainsAny(t.Image, " \t\r\n") {
		return t, fmt.Errorf("edge template: Image %q: want an image reference", t.Image)
	}
	switch t.ImagePullPolicy {
	case "":
		t.ImagePullPolicy = DefaultImagePullPolicy
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return t, fmt.Errorf("edge template: ImagePullPolicy %q: want Always, IfNotPresent or Never", t.ImagePullPolicy)
	}
	if err := validateResources(t.Resources); err != nil {
		return t, fmt.Errorf("edge template: Resources: %w", err)
	}
	if err := validateHostPort(t.ControlPlaneAddress); err != nil {
		return t, fmt.Errorf("edge template: ControlPlaneAddress %q: %w", t.ControlPlaneAddress, err)
	}
	if strings.TrimSpace(t.TokenAudience) == "" {
		return t, errors.New("edge template: TokenAudience is empty")
	}
	switch {
	case t.ContainerPort == 0:
		t.ContainerPort = DefaultContainerPort
	case t.ContainerPort < 1 || t.ContainerPort > 65535:
		return t, fmt.Errorf("edge template: ContainerPort %d: want 1-65535", t.ContainerPort)
	}
	switch {
	case t.Replicas == 0:
		t.Replicas = DefaultReplicas
	case t.Replicas < 0:
		return t, fmt.Errorf("edge template: Replicas %d: must not be negative", t.Replicas)
	}
	switch {
	case t.RunAsUser == 0:
		t.RunAsUser = DefaultRunAsUser
	case t.RunAsUser < 0:
		return t, fmt.Errorf("edge template: RunAsUser %d: want a non-root UID", t.RunAsUser)
	}
	for i, a := range t.ExtraArgs {
		if name, ok := flagName(a); ok && slices.Contains(ownedFlags, name) {
			return t, fmt.Errorf("edge template: ExtraArgs[%d]: --%s is set by the controller", i, name)
		}
	}
	if _, _, err := t.shutdownDurations(); err != nil {
		return t, fmt.Errorf("edge template: ExtraArgs: %w", err)
	}
	if err := validateLabels(t.Labels); err != nil {
		return t, fmt.Errorf("edge template: Labels: %w", err)
	}
	return t, nil
}

func validateResources(r corev1.ResourceRequirements) error {
	for name, req := range r.Requests {
		if req.Sign() < 0 {
			return fmt.Errorf("requests.%s %s is negative", name, req.String())
		}
		if lim, ok := r.Limits[name]; ok && req.Cmp(lim) > 0 {
			return fmt.Errorf("requests.%s %s exceeds limits.%s %s", name, req.String(), name, lim.String())
		}
	}
	for name, lim := range r.Limits {
		if lim.Sign() < 0 {
			return fmt.Errorf("limits.%s %s is negative", name, lim.String())
		}
	}
	return nil
}

func validateHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	if host == "" {
		return errors.New("empty host")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q: want 1-65535", port)
	}
	return nil
}

func validateLabels(labels map[string]string) error {
	for k, v := range labels {
		if slices.Contains(reservedLabels, k) {
			return fmt.Errorf("%q is set by the controller", k)
		}
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("%q value %q: %s", k, v, strings.Join(errs, "; "))
		}
	}
	return nil
}

// flagName returns the name of a Go-style flag argument ("-x", "--x",
// "--x=v"); ok is false for a value.
func flagName(arg string) (string, bool) {
	if !strings.HasPrefix(arg, "-") || arg == "-" || arg == "--" {
		return "", false
	}
	name := strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-")
	name, _, _ = strings.Cut(name, "=")
	return name, name != ""
}

// hasFlag reports whether args set the flag name.
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if n, ok := flagName(a); ok && n == name {
			return true
		}
	}
	return false
}
