package webhook

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

type admitCase struct {
	name      string
	namespace string
	op        admissionv1.Operation // CREATE when empty
	sub       string
	pod       *corev1.Pod
	old       *corev1.Pod
}

// with applies changes to a pod, for readable case tables.
func with(p *corev1.Pod, f func(p *corev1.Pod)) *corev1.Pod {
	f(p)
	return p
}

var originalsKey = kubecontract.OriginalImagesAnnotation

// admitCases are the golden table: pods → patches and warnings.
var admitCases = []admitCase{
	{name: "short name", namespace: "team-a", pod: pod("nginx")},
	{name: "docker hub spellings", namespace: "team-a", pod: pod("docker.io/nginx", "index.docker.io/library/nginx", "registry-1.docker.io/library/nginx", "user/app:1", "nginx:1.25")},
	{name: "digests with and without tags", namespace: "team-a", pod: pod("nginx@"+digest, "nginx:1.25@"+digest, "ghcr.io/o/r:v1@"+digest)},
	{name: "ghcr quay registry.k8s.io", namespace: "team-a", pod: pod("ghcr.io/o/r:tag", "quay.io/x/y@"+digest, "registry.k8s.io/pause:3.9")},
	{name: "registries with ports", namespace: "team-a", pod: pod("registry.corp.example:5443/team/app:v1", "registry.corp.example/team/app:v1", "example.com:8443/x/y:1")},
	{name: "unknown host", namespace: "team-a", pod: pod("example.com/x/y:1")},
	{name: "malformed images", namespace: "team-a", pod: pod("UPPER/Case", "nginx:tag:tag", "", "ghcr.io/"+strings.Repeat("a", 300), "nginx@sha256:short")},
	{name: "malformed next to a good one", namespace: "team-a", pod: pod("nginx:tag:tag", "nginx")},
	{name: "loopback registries", namespace: "team-a", pod: pod("localhost:5000/x", "127.0.0.1:5000/x")},
	{name: "already rewritten, no pull secret yet", namespace: "team-a", pod: pod(edge + "/dockerhub/library/nginx:latest")},
	{name: "already rewritten and complete", namespace: "team-a", pod: with(pod(edge+"/dockerhub/library/nginx:latest"), func(p *corev1.Pod) {
		p.Annotations = map[string]string{originalsKey: `{"containers/c0":"nginx"}`}
		p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: kubecontract.PullSecretName}}
	})},
	{name: "init and ephemeral containers", namespace: "team-a", pod: with(pod("nginx"), func(p *corev1.Pod) {
		p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox:1.36"}, {Name: "local", Image: "localhost:5000/x"}}
		p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug", Image: "ghcr.io/o/debug"}}}
	})},
	{name: "pre-existing annotations and pull secrets", namespace: "team-a", pod: with(pod("nginx"), func(p *corev1.Pod) {
		p.Annotations = map[string]string{"team": "a/b~c"}
		p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "their-own"}}
	})},
	{name: "pull secret already there", namespace: "team-a", pod: with(pod("nginx"), func(p *corev1.Pod) {
		p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "their-own"}, {Name: kubecontract.PullSecretName}}
	})},
	{name: "original-images merged, first original kept", namespace: "team-a", pod: with(pod(edge+"/dockerhub/library/nginx:1", "ghcr.io/o/sidecar:1"), func(p *corev1.Pod) {
		// As after a reinvocation: another webhook added c1, and c0's
		// record names the image the user wrote.
		p.Annotations = map[string]string{originalsKey: `{"containers/c0":"nginx:1","containers/c1":"quay.io/first/writer"}`}
		p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: kubecontract.PullSecretName}}
	})},
	{name: "original-images not JSON", namespace: "team-a", pod: with(pod("nginx"), func(p *corev1.Pod) {
		p.Annotations = map[string]string{originalsKey: "nginx"}
	})},
	{name: "empty annotations and pull secrets present", namespace: "team-a", pod: with(pod("nginx"), func(p *corev1.Pod) {
		p.Annotations = map[string]string{}
		p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{}
	})},
	{name: "generateName and no namespace in the pod", namespace: "team-a", pod: with(pod("nginx"), func(p *corev1.Pod) {
		p.Name, p.GenerateName, p.Namespace = "", "web-", ""
	})},
	{name: "opt-out annotation", namespace: "team-a", pod: with(pod("nginx"), func(p *corev1.Pod) {
		p.Annotations = map[string]string{kubecontract.OptOutAnnotation: "false"}
	})},
	{name: "opt-out annotation with another value", namespace: "team-a", pod: with(pod("nginx"), func(p *corev1.Pod) {
		p.Annotations = map[string]string{kubecontract.OptOutAnnotation: "no"}
	})},
	{name: "edge's own pod", namespace: "team-a", pod: with(pod("ghcr.io/k8s-selfhost-repo/edge:1"), func(p *corev1.Pod) {
		p.Labels = map[string]string{kubecontract.ComponentLabel: kubecontract.EdgeComponent, kubecontract.ManagedByLabel: kubecontract.ManagedByValue}
	})},
	{name: "a user's pod labelled component=edge", namespace: "team-a", pod: with(pod("nginx"), func(p *corev1.Pod) {
		p.Labels = map[string]string{kubecontract.ComponentLabel: kubecontract.EdgeComponent}
	})},
	{name: "release namespace", namespace: release, pod: pod("nginx")},
	{name: "kube-system", namespace: "kube-system", pod: pod("nginx")},
	{name: "namespace not opted in", namespace: "plain", pod: pod("nginx")},
	{name: "edge not ready", namespace: "team-notready", pod: pod("nginx", "example.com/x")},
	{name: "edge without an address", namespace: "team-noaddr", pod: pod("nginx")},
	{name: "namespace without a pull secret", namespace: "team-nosec", pod: pod("nginx")},
	{name: "prefix not allowed", namespace: "team-ghcr", pod: pod("nginx", "ghcr.io/o/r:1")},
	{name: "unusable namespace policy", namespace: "team-broken", pod: pod("nginx")},
	{name: "many warnings", namespace: "team-a", pod: pod(slices.Repeat([]string{"example.com/x"}, 20)...)},
	{name: "kubectl debug: new ephemeral container", namespace: "team-a", op: admissionv1.Update, sub: "ephemeralcontainers",
		old: with(pod(edge+"/dockerhub/library/nginx:latest"), func(p *corev1.Pod) {
			p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: kubecontract.PullSecretName}}
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "old", Image: "busybox"}}}
		}),
		pod: with(pod(edge+"/dockerhub/library/nginx:latest"), func(p *corev1.Pod) {
			p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: kubecontract.PullSecretName}}
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{
				{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "old", Image: "busybox"}},
				{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "busybox:1.36"}},
			}
		})},
	{name: "kubectl debug: pod without the pull secret", namespace: "team-a", op: admissionv1.Update, sub: "ephemeralcontainers",
		old: pod("example.com/app"),
		pod: with(pod("example.com/app"), func(p *corev1.Pod) {
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "busybox"}}}
		})},
	{name: "plain update is not mutated", namespace: "team-a", op: admissionv1.Update, pod: pod("nginx"), old: pod("nginx")},
}

func TestAdmitGolden(t *testing.T) {
	t.Parallel()
	h := newTestHandler()
	var b strings.Builder
	for _, tc := range admitCases {
		op := tc.op
		if op == "" {
			op = admissionv1.Create
		}
		body := review(t, tc.namespace, op, tc.sub, tc.pod, tc.old)
		code, resp, text := post(t, h, body)
		if code != http.StatusOK {
			t.Fatalf("%s: status %d: %s", tc.name, code, text)
		}
		raw := mustJSON(t, tc.pod)
		patched := checkResponse(t, "0b7a1c2e-0000-4000-8000-000000000001", resp, raw)
		checkIdempotent(t, h, tc, op, patched)
		checkOriginals(t, tc, patched)

		fmt.Fprintf(&b, "# %s\nrequest:  %s pods%s in %q\n", tc.name, op, subSuffix(tc.sub), tc.namespace)
		fmt.Fprintf(&b, "images:   %s\n", images(tc.pod))
		b.WriteString("patch:")
		if len(resp.Patch) == 0 {
			b.WriteString(" none\n")
		} else {
			var ops []json.RawMessage
			if err := json.Unmarshal(resp.Patch, &ops); err != nil {
				t.Fatal(err)
			}
			b.WriteString("\n")
			for _, op := range ops {
				fmt.Fprintf(&b, "  %s\n", op)
			}
		}
		b.WriteString("warnings:")
		if len(resp.Warnings) == 0 {
			b.WriteString(" none\n")
		} else {
			b.WriteString("\n")
			for _, w := range resp.Warnings {
				fmt.Fprintf(&b, "  %s\n", w)
			}
		}
		b.WriteString("\n")
	}
	path := filepath.Join("testdata", "admit.golden")
	testkit.Golden(t, path, b.String(), *update)
}

// checkIdempotent re-admits the patched pod, as the API server does with
// reinvocationPolicy IfNeeded: nothing may change the second time.
func checkIdempotent(t *testing.T, h http.Handler, tc admitCase, op admissionv1.Operation, patched []byte) {
	t.Helper()
	var p corev1.Pod
	if err := json.Unmarshal(patched, &p); err != nil {
		t.Fatalf("%s: patched pod: %v", tc.name, err)
	}
	_, resp, _ := post(t, h, review(t, tc.namespace, op, tc.sub, &p, tc.old))
	if len(resp.Patch) != 0 {
		t.Errorf("%s: re-admission patched again: %s", tc.name, resp.Patch)
	}
}

// checkOriginals: every rewritten image is recorded under its container,
// and a record that existed before is kept.
func checkOriginals(t *testing.T, tc admitCase, patched []byte) {
	t.Helper()
	var p corev1.Pod
	if err := json.Unmarshal(patched, &p); err != nil {
		t.Fatal(err)
	}
	var before, after map[string]string
	_ = json.Unmarshal([]byte(tc.pod.Annotations[originalsKey]), &before)
	if v, ok := p.Annotations[originalsKey]; ok {
		if err := json.Unmarshal([]byte(v), &after); err != nil {
			t.Fatalf("%s: annotation after the patch: %v", tc.name, err)
		}
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s: original %s=%q lost (now %q)", tc.name, k, v, after[k])
		}
	}
	check := func(list, name, was, now string) {
		if was == now || tc.op == admissionv1.Update {
			return
		}
		if got, ok := after[list+"/"+name]; !ok || (before[list+"/"+name] == "" && got != was) {
			t.Errorf("%s: %s/%s rewritten from %q but recorded as %q", tc.name, list, name, was, got)
		}
	}
	for i, c := range p.Spec.Containers {
		check(listContainers, c.Name, tc.pod.Spec.Containers[i].Image, c.Image)
	}
	for i, c := range p.Spec.InitContainers {
		check(listInitContainers, c.Name, tc.pod.Spec.InitContainers[i].Image, c.Image)
	}
	for i, c := range p.Spec.EphemeralContainers {
		check(listEphemeralContainers, c.Name, tc.pod.Spec.EphemeralContainers[i].Image, c.Image)
	}
}

func subSuffix(sub string) string {
	if sub == "" {
		return ""
	}
	return "/" + sub
}

func images(p *corev1.Pod) string {
	var parts []string
	for _, c := range p.Spec.Containers {
		parts = append(parts, fmt.Sprintf("containers/%s=%q", c.Name, clip(c.Image)))
	}
	for _, c := range p.Spec.InitContainers {
		parts = append(parts, fmt.Sprintf("initContainers/%s=%q", c.Name, clip(c.Image)))
	}
	for _, c := range p.Spec.EphemeralContainers {
		parts = append(parts, fmt.Sprintf("ephemeralContainers/%s=%q", c.Name, clip(c.Image)))
	}
	return strings.Join(parts, " ")
}

// TestAdmitLogs: one line per admission, with the namespace, the pod and
// the counts.
func TestAdmitLogs(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	h := newTestHandler(WithLogger(slog.New(slog.NewJSONHandler(&buf, nil))))
	p := with(pod("nginx", "example.com/x"), func(p *corev1.Pod) { p.Name, p.GenerateName = "", "web-" })
	if code, _, text := post(t, h, review(t, "team-a", admissionv1.Create, "", p, nil)); code != http.StatusOK {
		t.Fatalf("status %d: %s", code, text)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d log lines, want 1:\n%s", len(lines), buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"msg": "admission", "namespace": "team-a", "pod": "web-*", "result": "patched",
		"images": 2.0, "rewritten": 1.0, "untouched": 1.0, "warnings": 1.0, "pull_secret_added": true}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("log %s = %v, want %v (line %s)", k, rec[k], v, lines[0])
		}
	}
}

// TestAdmitNamespaceFromRequest: the namespace comes from the request,
// never from the pod, which a client controls.
func TestAdmitNamespaceFromRequest(t *testing.T) {
	t.Parallel()
	h := newTestHandler()
	p := with(pod("nginx"), func(p *corev1.Pod) { p.Namespace = "team-a" })
	_, resp, _ := post(t, h, review(t, "plain", admissionv1.Create, "", p, nil))
	if len(resp.Patch) != 0 {
		t.Fatalf("pod of an unlabelled namespace patched because its metadata says team-a: %s", resp.Patch)
	}
}

func TestWarningClipped(t *testing.T) {
	t.Parallel()
	var m mutation
	m.warn(strings.Repeat("é", 300) + "\x00\n")
	if len(m.warnings[0]) > maxWarningLen || !strings.HasSuffix(m.warnings[0], "…") {
		t.Fatalf("warning not clipped: %d bytes %q", len(m.warnings[0]), m.warnings[0])
	}
	m = mutation{}
	m.warn("a\x00b\nc")
	if m.warnings[0] != warningPrefix+"a?b?c" {
		t.Fatalf("warning not sanitised: %q", m.warnings[0])
	}
}
