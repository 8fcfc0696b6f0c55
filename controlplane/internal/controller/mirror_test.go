package controller

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestMirror: WithMirror gives the release namespace an edge without the
// opt-in label, listed by Edges; with auth off its pull token is left out
// of what the configuration gets; other unlabelled namespaces stay empty.
func TestMirror(t *testing.T) {
	t.Parallel()
	for _, auth := range []bool{true, false} {
		e := newEnv(t, testTemplate(), namespace("sys", nil), namespace("other", nil), optedIn("team-a"))
		WithMirror("sys", auth)(e.c)
		for _, ns := range []string{"sys", "other", "team-a"} {
			e.mustSync(ns)
		}
		e.refresh()
		if n := e.objects("sys").count(); n != 5 {
			t.Fatalf("auth=%v: the mirror's namespace has %d of 5 objects", auth, n)
		}
		if n := e.objects("other").count(); n != 0 {
			t.Errorf("auth=%v: an unlabelled namespace got %d objects", auth, n)
		}
		edges, err := e.c.Edges()
		if err != nil {
			t.Fatal(err)
		}
		// Sorted by namespace: the mirror ("sys") first.
		if len(edges) != 2 || edges[0].Namespace != "sys" || edges[1].Namespace != "team-a" {
			t.Fatalf("auth=%v: Edges = %+v, want the mirror and team-a", auth, edges)
		}
		_, token := e.objects("sys").pull(t)
		if want := map[bool]string{true: token, false: ""}[auth]; edges[0].PullToken != want {
			t.Errorf("auth=%v: the mirror's pull token in its configuration = %q, want %q", auth, edges[0].PullToken, want)
		}
	}
}

// TestMirrorTLS: with WithMirrorTLS the mirror's Deployment mounts the
// Secret, passes --tls-cert/--tls-key and probes over HTTPS; a second sync
// finds no drift; other namespaces' edges are untouched.
func TestMirrorTLS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTemplate(), namespace("sys", nil), optedIn("team-a"))
	WithMirror("sys", true)(e.c)
	WithMirrorTLS("mirror-cert")(e.c)
	e.mustSync("sys")
	e.mustSync("team-a")
	dep := e.objects("sys").dep
	spec := dep.Spec.Template.Spec
	edge := spec.Containers[0]
	if i := volumeIndex(spec.Volumes, "mirror-tls"); i < 0 || spec.Volumes[i].Secret == nil || spec.Volumes[i].Secret.SecretName != "mirror-cert" {
		t.Fatalf("volumes %+v lack the mirror's certificate Secret", spec.Volumes)
	}
	args := strings.Join(edge.Args, " ")
	if !strings.Contains(args, "--tls-cert="+mirrorTLSDir+"/tls.crt") || !strings.Contains(args, "--tls-key="+mirrorTLSDir+"/tls.key") {
		t.Errorf("args %q lack --tls-cert/--tls-key", args)
	}
	for name, p := range map[string]*corev1.Probe{"startup": edge.StartupProbe, "readiness": edge.ReadinessProbe, "liveness": edge.LivenessProbe} {
		if p != nil && p.HTTPGet != nil && p.HTTPGet.Scheme != corev1.URISchemeHTTPS {
			t.Errorf("%s probe scheme %s, want HTTPS", name, p.HTTPGet.Scheme)
		}
	}
	if a := strings.Join(e.objects("team-a").dep.Spec.Template.Spec.Containers[0].Args, " "); strings.Contains(a, "--tls-cert") {
		t.Errorf("team-a's edge got the mirror's TLS: %q", a)
	}
	e.refresh()
	if d := deploymentDrift(dep, e.c.desiredDeployment("sys", nodePortOf(e.objects("sys").svc))); d != "" {
		t.Errorf("the mirror's Deployment drifts from itself: %s", d)
	}
}
