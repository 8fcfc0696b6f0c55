package controller

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

func TestEdgeTemplateValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		edit    func(*EdgeTemplate)
		wantErr string // a substring; "" for valid
	}{
		{"defaults", func(*EdgeTemplate) {}, ""},
		{"all set", func(e *EdgeTemplate) {
			e.ImagePullPolicy = corev1.PullAlways
			e.ContainerPort = 5001
			e.Replicas = 2
			e.RunAsUser = 1000
			e.ExtraArgs = []string{"--storage=s3://bucket/prefix", "--s3-path-style"}
			e.Labels = map[string]string{"team": "platform"}
			e.Resources = corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
			}
		}, ""},
		{"no image", func(e *EdgeTemplate) { e.Image = "" }, "Image"},
		{"image with space", func(e *EdgeTemplate) { e.Image = "edge v1" }, "Image"},
		{"pull policy", func(e *EdgeTemplate) { e.ImagePullPolicy = "Sometimes" }, "ImagePullPolicy"},
		{"no control plane", func(e *EdgeTemplate) { e.ControlPlaneAddress = "" }, "ControlPlaneAddress"},
		{"control plane without port", func(e *EdgeTemplate) { e.ControlPlaneAddress = "cp.svc" }, "ControlPlaneAddress"},
		{"control plane bad port", func(e *EdgeTemplate) { e.ControlPlaneAddress = "cp.svc:http" }, "ControlPlaneAddress"},
		{"control plane no host", func(e *EdgeTemplate) { e.ControlPlaneAddress = ":9090" }, "ControlPlaneAddress"},
		{"no audience", func(e *EdgeTemplate) { e.TokenAudience = " " }, "TokenAudience"},
		{"port too big", func(e *EdgeTemplate) { e.ContainerPort = 70000 }, "ContainerPort"},
		{"negative replicas", func(e *EdgeTemplate) { e.Replicas = -1 }, "Replicas"},
		{"root", func(e *EdgeTemplate) { e.RunAsUser = -1 }, "RunAsUser"},
		{"owned flag", func(e *EdgeTemplate) { e.ExtraArgs = []string{"--storage=/x", "--listen=:1"} }, "ExtraArgs[1]: --listen"},
		{"owned flag single dash", func(e *EdgeTemplate) { e.ExtraArgs = []string{"-control-plane", "x:1"} }, "ExtraArgs[0]: --control-plane"},
		{"owned advertise address", func(e *EdgeTemplate) { e.ExtraArgs = []string{"--advertise-address=1.2.3.4:5"} }, "--advertise-address"},
		{"shutdown flags", func(e *EdgeTemplate) { e.ExtraArgs = []string{"--shutdown-delay=1s", "--shutdown-timeout", "2m"} }, ""},
		{"bad shutdown delay", func(e *EdgeTemplate) { e.ExtraArgs = []string{"--shutdown-delay=soon"} }, "--shutdown-delay"},
		{"negative shutdown timeout", func(e *EdgeTemplate) { e.ExtraArgs = []string{"--shutdown-timeout=-1s"} }, "--shutdown-timeout"},
		{"reserved label", func(e *EdgeTemplate) { e.Labels = map[string]string{kubecontract.ManagedByLabel: "me"} }, "Labels"},
		{"bad label key", func(e *EdgeTemplate) { e.Labels = map[string]string{"a b": "c"} }, "Labels"},
		{"bad label value", func(e *EdgeTemplate) { e.Labels = map[string]string{"a": "b c"} }, "Labels"},
		{"requests over limits", func(e *EdgeTemplate) {
			e.Resources = corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")},
				Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")},
			}
		}, "Resources: requests.cpu"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tmpl := testTemplate()
			tt.edit(&tmpl)
			err := tmpl.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate: %v, want an error naming %q", err, tt.wantErr)
			}
		})
	}
}

func TestDesiredDeployment(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		edit      func(*EdgeTemplate)
		wantArgs  []string // in order, after the fixed ones
		notArgs   []string
		wantCache bool
	}{
		{
			name:      "local storage",
			edit:      func(*EdgeTemplate) {},
			wantArgs:  []string{"--storage=" + CacheDir},
			notArgs:   []string{"--state-dir=/tmp/edge-state"},
			wantCache: true,
		},
		{
			name: "s3 storage",
			edit: func(e *EdgeTemplate) {
				e.ExtraArgs = []string{"--storage=s3://bucket/p", "--s3-endpoint=http://minio:9000"}
			},
			wantArgs: []string{"--state-dir=/tmp/edge-state", "--storage=s3://bucket/p", "--s3-endpoint=http://minio:9000"},
			notArgs:  []string{"--storage=" + CacheDir},
		},
		{
			// The S3 settings and credentials come over the stream: nothing
			// about them in the Deployment, and no cache volume.
			name:     "storage from the control plane",
			edit:     func(e *EdgeTemplate) { e.ExtraArgs = []string{"--storage=control-plane"} },
			wantArgs: []string{"--state-dir=/tmp/edge-state", "--storage=control-plane"},
			notArgs:  []string{"--storage=" + CacheDir},
		},
		{
			name:     "s3 storage with a state dir",
			edit:     func(e *EdgeTemplate) { e.ExtraArgs = []string{"--storage", "s3://bucket", "--state-dir=/state"} },
			wantArgs: []string{"--storage", "s3://bucket", "--state-dir=/state"},
			notArgs:  []string{"--state-dir=/tmp/edge-state", "--storage=" + CacheDir},
		},
		{
			name: "port, replicas, labels, resources",
			edit: func(e *EdgeTemplate) {
				e.ContainerPort = 5001
				e.Replicas = 3
				e.Labels = map[string]string{"team": "platform"}
				e.ImagePullPolicy = corev1.PullAlways
				e.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}
			},
			wantArgs:  []string{"--storage=" + CacheDir},
			wantCache: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := testTemplate()
			tt.edit(&in)
			tmpl, err := in.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			d := tmpl.desiredDeployment("team-a", 30123)
			if d.Namespace != "team-a" || d.Name != kubecontract.EdgeName {
				t.Fatalf("deployment %s/%s", d.Namespace, d.Name)
			}
			for _, l := range []map[string]string{d.Labels, d.Spec.Template.Labels} {
				for k, v := range ManagedLabels() {
					if l[k] != v {
						t.Errorf("label %s=%q, want %q", k, l[k], v)
					}
				}
				for k, v := range tmpl.Labels {
					if l[k] != v {
						t.Errorf("template label %s=%q, want %q", k, l[k], v)
					}
				}
			}
			if got := *d.Spec.Replicas; got != tmpl.Replicas {
				t.Errorf("replicas %d, want %d", got, tmpl.Replicas)
			}
			ps := d.Spec.Template.Spec
			if ps.ServiceAccountName != kubecontract.EdgeName || *ps.AutomountServiceAccountToken {
				t.Errorf("service account %q automount %v", ps.ServiceAccountName, *ps.AutomountServiceAccountToken)
			}
			if sc := ps.SecurityContext; !*sc.RunAsNonRoot || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("pod security context %+v", sc)
			}
			if len(ps.Containers) != 1 {
				t.Fatalf("%d containers", len(ps.Containers))
			}
			c := ps.Containers[0]
			if c.Image != tmpl.Image || c.ImagePullPolicy != tmpl.ImagePullPolicy {
				t.Errorf("image %s %s", c.Image, c.ImagePullPolicy)
			}
			fixed := []string{
				"--listen=:" + itoa(tmpl.ContainerPort), "--namespace=$(POD_NAMESPACE)", "--pod-name=$(POD_NAME)",
				"--control-plane=" + tmpl.ControlPlaneAddress, "--control-plane-token-file=" + TokenPath,
				"--advertise-address=127.0.0.1:30123",
			}
			if want := append(fixed, tt.wantArgs...); !slices.Equal(c.Args, want) {
				t.Errorf("args\n got %q\nwant %q", c.Args, want)
			}
			for _, a := range tt.notArgs {
				if slices.Contains(c.Args, a) {
					t.Errorf("args %q contain %q", c.Args, a)
				}
			}
			if len(c.Env) != 2 || c.Env[0].ValueFrom.FieldRef.FieldPath != "metadata.namespace" || c.Env[1].ValueFrom.FieldRef.FieldPath != "metadata.name" {
				t.Errorf("env %+v", c.Env)
			}
			if c.Ports[0].ContainerPort != tmpl.ContainerPort {
				t.Errorf("container port %d", c.Ports[0].ContainerPort)
			}
			if p := c.ReadinessProbe.HTTPGet; p.Path != "/readyz" || p.Port != intstr.FromInt32(tmpl.ContainerPort) {
				t.Errorf("readiness probe %+v", p)
			}
			if p := c.LivenessProbe.HTTPGet; p.Path != "/healthz" || p.Port != intstr.FromInt32(tmpl.ContainerPort) {
				t.Errorf("liveness probe %+v", p)
			}
			sc := c.SecurityContext
			if !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || !*sc.RunAsNonRoot || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("container security context %+v", sc)
			}
			if !c.Resources.Limits.Memory().Equal(*tmpl.Resources.Limits.Memory()) {
				t.Errorf("resources %+v", c.Resources)
			}
			tok := ps.Volumes[volumeIndex(ps.Volumes, volToken)].Projected.Sources[0].ServiceAccountToken
			if tok.Audience != tmpl.TokenAudience || *tok.ExpirationSeconds != 3600 || tok.Path != "token" {
				t.Errorf("token projection %+v", tok)
			}
			mounts := map[string]string{}
			for _, m := range c.VolumeMounts {
				mounts[m.Name] = m.MountPath
			}
			if mounts[volToken] != TokenDir || mounts[volTmp] != "/tmp" {
				t.Errorf("mounts %v", mounts)
			}
			if hasCache := volumeIndex(ps.Volumes, volCache) >= 0; hasCache != tt.wantCache || (mounts[volCache] == CacheDir) != tt.wantCache {
				t.Errorf("cache volume %v mount %q, want %v", hasCache, mounts[volCache], tt.wantCache)
			}
		})
	}
}

func TestDesiredService(t *testing.T) {
	t.Parallel()
	tmpl, err := EdgeTemplate{Image: "e", ControlPlaneAddress: "cp:1", TokenAudience: "a", ContainerPort: 5001}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	s := tmpl.desiredService("team-a", 30123)
	if s.Spec.Type != corev1.ServiceTypeNodePort || s.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyCluster {
		t.Errorf("type %s policy %s", s.Spec.Type, s.Spec.ExternalTrafficPolicy)
	}
	p := s.Spec.Ports[0]
	if p.Port != 5000 || p.TargetPort != intstr.FromInt32(5001) || p.NodePort != 30123 || p.Protocol != corev1.ProtocolTCP {
		t.Errorf("port %+v", p)
	}
	d := tmpl.desiredDeployment("team-a", 30123)
	for k, v := range s.Spec.Selector {
		if d.Spec.Template.Labels[k] != v || d.Spec.Selector.MatchLabels[k] != v {
			t.Errorf("selector %s=%s does not select the edge's pods", k, v)
		}
	}
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
