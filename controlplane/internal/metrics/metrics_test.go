package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestReasonClass(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ detail, want string }{
		{"upstreams[0].url: want https", ReasonUpstreams},
		{"invalid configuration: storage.s3: bucket missing", ReasonStorage},
		{"proxy.nodes[1]: unknown type", ReasonProxy},
		{"policy.maxConcurrentFills: negative", ReasonPolicy},
		{`namespace "a": this edge serves namespace "b"`, ReasonNamespace},
		{"password=hunter2 rejected", ReasonOther},
		{"", ReasonOther},
	} {
		if got := ReasonClass(tc.detail); got != tc.want {
			t.Errorf("ReasonClass(%q) = %q, want %q", tc.detail, got, tc.want)
		}
	}
}

// TestExposition: the observers' calls show in the text format, and a
// NACK's detail never becomes a label value.
func TestExposition(t *testing.T) {
	t.Parallel()
	m := New()
	m.EdgeConnected("team-a")
	m.EdgeConnected("team-a")
	m.EdgeDisconnected("team-a")
	m.ConfigSent("team-a")
	m.ConfigAnswered("team-a", true, "")
	m.ConfigAnswered("team-a", false, "upstreams[0].password: secret-value rejected")
	m.Reconciled(nil, time.Millisecond)
	m.Reconciled(errors.New("boom"), time.Millisecond)
	m.Admitted("rewritten")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	text := string(body)
	for _, want := range []string{
		`controlplane_edges_connected{namespace="team-a"} 1`,
		`controlplane_config_pushes_total{namespace="team-a"} 1`,
		`controlplane_config_acks_total{namespace="team-a",reason="none",result="ack"} 1`,
		`controlplane_config_acks_total{namespace="team-a",reason="upstreams",result="nack"} 1`,
		`controlplane_reconciles_total{result="error"} 1`,
		`controlplane_reconciles_total{result="success"} 1`,
		`controlplane_reconcile_duration_seconds_count 2`,
		`controlplane_webhook_admissions_total{outcome="rewritten"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(text, "secret-value") {
		t.Error("a NACK detail leaked into the metrics")
	}
}
