package controller

import "testing"

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
