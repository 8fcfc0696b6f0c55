package nodeaccess

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func node(name string, ready, cordoned bool) *corev1.Node {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{Unschedulable: cordoned},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}}}}
}

func pod(name, nodeName string, ready bool) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{NodeName: nodeName},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}}}
}

func TestEvaluateAndWhy(t *testing.T) {
	t.Parallel()
	deleting := pod("fw-old", "n1", true)
	deleting.DeletionTimestamp = &metav1.Time{}
	pending := pod("fw-pending", "n1", false)
	pending.Status.Phase = corev1.PodPending
	for _, tc := range []struct {
		name    string
		mode    Mode
		nodes   []*corev1.Node
		pods    []*corev1.Pod
		want    []Node
		wantWhy string
	}{
		{"every node has a ready forwarder", ModeAuto,
			[]*corev1.Node{node("n2", true, false), node("n1", true, false)},
			[]*corev1.Pod{pod("fw-a", "n1", true), pod("fw-b", "n2", true)},
			[]Node{{"n1", true, "fw-a", true}, {"n2", true, "fw-b", true}}, ""},
		{"a node without one", ModeForwarder,
			[]*corev1.Node{node("n1", true, false), node("n2", true, false)},
			[]*corev1.Pod{pod("fw-a", "n1", true)},
			[]Node{{"n1", true, "fw-a", true}, {"n2", true, "", false}}, "no ready forwarder (selfhost-forwarder) on node n2"},
		{"a forwarder not ready", ModeAuto,
			[]*corev1.Node{node("n1", true, false)},
			[]*corev1.Pod{pod("fw-a", "n1", false)},
			[]Node{{"n1", true, "fw-a", false}}, "on node n1"},
		{"nodes that take no pods do not count", ModeAuto,
			[]*corev1.Node{node("n1", true, false), node("down", false, false), node("cordoned", true, true)},
			[]*corev1.Pod{pod("fw-a", "n1", true)},
			[]Node{{"cordoned", false, "", false}, {"down", false, "", false}, {"n1", true, "fw-a", true}}, ""},
		{"no schedulable node", ModeAuto,
			[]*corev1.Node{node("down", false, false)}, nil,
			[]Node{{"down", false, "", false}}, "no node is Ready and schedulable"},
		{"rollout: the ready pod counts, a deleted or pending one not", ModeAuto,
			[]*corev1.Node{node("n1", true, false)},
			[]*corev1.Pod{deleting, pending, pod("fw-new", "n1", true), pod("fw-unbound", "", true)},
			[]Node{{"n1", true, "fw-new", true}}, ""},
		{"only a deleted pod", ModeAuto,
			[]*corev1.Node{node("n1", true, false)}, []*corev1.Pod{deleting},
			[]Node{{"n1", true, "", false}}, "on node n1"},
		{"nodePort trusts the Service proxy", ModeNodePort,
			[]*corev1.Node{node("n1", true, false)}, nil,
			[]Node{{"n1", true, "", false}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Evaluate(tc.nodes, tc.pods)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Evaluate = %+v, want %+v", got, tc.want)
			}
			why := Why(tc.mode, got)
			if (tc.wantWhy == "") != (why == "") || !strings.Contains(why, tc.wantWhy) {
				t.Fatalf("Why = %q, want %q", why, tc.wantWhy)
			}
		})
	}
}

func TestWhyNamesFiveNodes(t *testing.T) {
	t.Parallel()
	var nodes []Node
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		nodes = append(nodes, Node{Name: n, Schedulable: true})
	}
	if why := Why(ModeAuto, nodes); !strings.Contains(why, "node a, b, c, d, e, and 2 more,") {
		t.Fatalf("Why = %q", why)
	}
}

func TestParseMode(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"nodePort", "forwarder", "auto"} {
		if m, err := ParseMode(s); err != nil || string(m) != s {
			t.Errorf("ParseMode(%q) = %q, %v", s, m, err)
		}
	}
	for _, s := range []string{"", "NodePort", "iptables"} {
		if _, err := ParseMode(s); err == nil {
			t.Errorf("ParseMode(%q) accepted", s)
		}
	}
}
