package server

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/brokerstore"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/configclient"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
)

// storageProbeTTL is how long one storage probe answers /readyz: kubelet
// and load balancers poll every few seconds, and each probe is a round
// trip to the store (an S3 HEAD).
const storageProbeTTL = 3 * time.Second

// controlStatus is the part of configclient.Client the gate reads.
type controlStatus interface{ Status() configclient.Status }

// gate is the edge's one "may serve" switch. An edge with --control-plane
// fails closed: until its own namespace's configuration is applied (from
// the stream, or restored from the state directory, which Restore accepts
// only for the same namespace) and, with --storage=control-plane, its
// storage is open, every registry request gets 503 UNAVAILABLE and /readyz
// 503. Serving the flag defaults instead would map names to the public
// upstreams and answer anonymously, bypassing the namespace's allow-list
// and pull token.
type gate struct {
	cp  controlStatus         // nil without --control-plane
	cps *brokerstore.Deferred // nil unless --storage=control-plane
	// open latches once every condition held: a configuration, once
	// applied, is never withdrawn (a NACK keeps the last good one).
	open atomic.Bool
	// draining is set on SIGTERM: /readyz answers 503 so the endpoint is
	// removed, while requests are still served.
	draining atomic.Bool
}

// waiting returns why registry requests cannot be served yet, or "".
func (g *gate) waiting() string {
	if g.open.Load() {
		return ""
	}
	if g.cps != nil && !g.cps.Ready() {
		return "waiting for storage from the control plane"
	}
	if g.cp != nil && g.cp.Status().Version == "" {
		return "waiting for this namespace's configuration from the control plane"
	}
	g.open.Store(true)
	return ""
}

// guard answers registry requests with 503 UNAVAILABLE while the gate is
// closed.
func (g *gate) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if why := g.waiting(); why != "" {
			w.Header().Set("Retry-After", "5")
			oci.WriteError(w, r, oci.NewError(http.StatusServiceUnavailable, oci.CodeUnavailable, "edge not ready: "+why))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// storageProbe caches the result of a storage check for ttl.
type storageProbe struct {
	check func(ctx context.Context) error
	ttl   time.Duration
	now   func() time.Time

	mu   sync.Mutex
	at   time.Time
	last error
}

// result probes the store unless a result younger than ttl is at hand. The
// lock is held during the probe: concurrent polls share one round trip.
func (p *storageProbe) result(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now := p.now(); p.at.IsZero() || now.Sub(p.at) >= p.ttl {
		p.last = p.check(ctx)
		p.at = p.now()
	}
	return p.last
}

// readyStatus is the /readyz body.
type readyStatus struct {
	// Ready repeats the status code: true with 200.
	Ready bool `json:"ready"`
	// Storage is the kind of storage: filesystem, s3 or brokered (through
	// the control plane, --storage=control-plane).
	Storage string `json:"storage"`
	// StorageStatus is ok, degraded (the probe failed: pulls stream from
	// upstream without caching) or waiting (not configured yet).
	StorageStatus string `json:"storage_status"`
	Mode          string `json:"mode"`
	Error         string `json:"error,omitempty"`
	// Config is flags (no --control-plane), applied or waiting.
	Config string `json:"config"`
	// Draining is true once the edge is shutting down.
	Draining bool `json:"draining,omitempty"`
	// ControlPlane is connected, disconnected or disabled (no
	// --control-plane).
	ControlPlane string `json:"control_plane"`
	// ConfigVersion is the control-plane configuration in effect; empty
	// while none is.
	ConfigVersion string `json:"config_version"`
	LastNACK      string `json:"last_nack,omitempty"`
}

// readiness answers /readyz: 200 when the edge can serve pulls, 503 while
// the gate is closed or the edge drains. Storage that fails its probe does
// not make the edge unready: pulls still work, streamed from upstream
// without caching, and an edge taken out of rotation would only move its
// clients to the public registries; the body says "degraded". A lost
// control plane does not either: the edge serves its last good
// configuration.
func readiness(g *gate, kind string, probe *storageProbe, cp *configclient.Client) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := readyStatus{Storage: kind, StorageStatus: "ok", Mode: "caching", Config: "flags", ControlPlane: "disabled"}
		code := http.StatusOK
		if cp != nil {
			cs := cp.Status()
			st.Config, st.ControlPlane, st.ConfigVersion, st.LastNACK = "applied", "disconnected", cs.Version, cs.LastNACK
			if cs.Connected {
				st.ControlPlane = "connected"
			}
		}
		if why := g.waiting(); why != "" {
			st.Mode, st.Error, code = "not ready: "+why, why, http.StatusServiceUnavailable
			if cp != nil && st.ConfigVersion == "" {
				st.Config = "waiting"
			}
			if g.cps != nil && !g.cps.Ready() {
				st.StorageStatus = "waiting"
			}
		} else {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			if err := probe.result(ctx); err != nil {
				st.StorageStatus = "degraded"
				st.Mode = "degraded: storage unavailable, streaming from upstream without caching"
				st.Error = err.Error()
			}
		}
		if g.draining.Load() {
			st.Draining, st.Mode, code = true, "draining: shutting down, finishing in-flight requests", http.StatusServiceUnavailable
		}
		st.Ready = code == http.StatusOK
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(st)
	})
}
