package configclient

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// invalidateTimeout bounds one tag invalidation, so a slow store cannot
// stall the stream.
const invalidateTimeout = 30 * time.Second

type stream = grpc.BidiStreamingClient[selfhostv1.StreamConfigRequest, selfhostv1.StreamConfigResponse]

// session runs one stream from hello to its end and returns why it ended.
func (c *Client) session(ctx context.Context, api selfhostv1.ConfigDiscoveryServiceClient) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.o.tokenFile != "" {
		token, err := readToken(c.o.tokenFile)
		if err != nil {
			return err
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	st, err := api.StreamConfig(ctx)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	s := &sender{st: st}
	hello := &selfhostv1.Hello{
		Namespace: c.namespace, Pod: c.o.pod, EdgeVersion: c.o.edgeVersion,
		LastAppliedVersion: c.version(), Address: c.o.address,
	}
	if err := s.send(&selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_Hello{Hello: hello}}); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}

	var wg sync.WaitGroup
	defer wg.Wait() // after cancel (deferred earlier, runs later): the stats loop has stopped
	defer cancel()
	if c.stats != nil && c.o.statsInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.reportStats(ctx, s)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.sendFailures(ctx, s)
	}()

	for {
		resp, err := st.Recv()
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		if !c.Status().Connected {
			c.setConnected(true)
			c.o.log.Info("control plane connected", "target", c.target)
		}
		switch k := resp.GetKind().(type) {
		case *selfhostv1.StreamConfigResponse_Config:
			ack := c.handleConfig(k.Config)
			if err := s.send(&selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_Ack{Ack: ack}}); err != nil {
				return fmt.Errorf("send ack: %w", err)
			}
		case *selfhostv1.StreamConfigResponse_InvalidateTag:
			c.invalidate(ctx, k.InvalidateTag)
		default:
			// A newer control plane may send kinds this edge does not know;
			// ignoring them keeps old edges working during an upgrade.
			c.o.log.Debug("ignoring unknown message from the control plane")
		}
	}
}

// handleConfig validates and applies one snapshot and returns its ACK or NACK.
func (c *Client) handleConfig(cfg *selfhostv1.EdgeConfig) *selfhostv1.Ack {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	ack := &selfhostv1.Ack{Version: cfg.GetVersion(), Nonce: cfg.GetNonce(), Accepted: true}
	// Equal versions mean equal content: after a reconnect the control
	// plane resends what the edge already runs, which needs an ACK only.
	if v := c.version(); v != "" && v == cfg.GetVersion() {
		c.mu.Lock()
		c.status.LastNACK = ""
		c.mu.Unlock()
		c.o.log.Debug("configuration unchanged", "version", v)
		return ack
	}
	if err := c.apply(cfg); err != nil {
		ack.Accepted, ack.ErrorDetail = false, err.Error()
		c.mu.Lock()
		c.status.LastNACK = fmt.Sprintf("version %s: %s", cfg.GetVersion(), err.Error())
		c.mu.Unlock()
		c.o.log.Warn("configuration rejected (NACK); keeping the last good one",
			"version", cfg.GetVersion(), "current_version", c.version(), "reason", err.Error())
		return ack
	}
	c.mu.Lock()
	c.status.Version, c.status.LastNACK = cfg.GetVersion(), ""
	c.mu.Unlock()
	if err := c.persist(cfg); err != nil {
		// The configuration is in effect; only a restart without the
		// control plane would miss it, so this is not a NACK.
		c.o.log.Error("configuration applied but not persisted", "version", cfg.GetVersion(), "err", err)
	}
	c.o.log.Info("configuration applied", "version", cfg.GetVersion(), "upstreams", len(cfg.GetUpstreams()),
		"allowed_prefixes", cfg.GetPolicy().GetAllowedPrefixes(), "pull_token", cfg.GetPolicy().GetPullToken() != "",
		"max_concurrent_fills", cfg.GetPolicy().GetMaxConcurrentFills())
	return ack
}

// apply validates cfg and hands it to the Applier; the error names the
// offending field.
func (c *Client) apply(cfg *selfhostv1.EdgeConfig) error {
	if err := configspec.ValidateEdgeConfig(cfg); err != nil {
		return err
	}
	if cfg.GetNamespace() != c.namespace {
		// The control plane takes the namespace from the token; an edge
		// started for another namespace must not serve this one's
		// policy and tags under its own.
		return fmt.Errorf("%w: namespace %q: this edge serves namespace %q", configspec.ErrInvalid, cfg.GetNamespace(), c.namespace)
	}
	// The Applier's errors name the field too ("upstreams[1].url: …").
	return c.applier.Apply(cfg)
}

func (c *Client) invalidate(ctx context.Context, m *selfhostv1.InvalidateTag) {
	if c.inv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, invalidateTimeout)
	defer cancel()
	log := c.o.log.With("prefix", m.GetPrefix(), "repository", m.GetRepository(), "tag", m.GetTag())
	if err := c.inv.InvalidateTag(ctx, m.GetPrefix(), m.GetRepository(), m.GetTag()); err != nil {
		log.Warn("tag invalidation failed", "err", err)
		return
	}
	log.Info("tag invalidated")
}

// reportStats sends the counters every interval until ctx ends.
func (c *Client) reportStats(ctx context.Context, s *sender) {
	t := time.NewTicker(c.o.statsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := c.stats.Stats()
		if st == nil {
			continue
		}
		if err := s.send(&selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_Stats{Stats: st}}); err != nil {
			// The receive loop sees the broken stream and reconnects.
			return
		}
	}
}

// sender serialises Send: gRPC streams allow one sender at a time, and
// ACKs and stats come from different goroutines.
type sender struct {
	mu sync.Mutex
	st stream
}

func (s *sender) send(m *selfhostv1.StreamConfigRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.Send(m)
}

// readToken reads the bearer token; it is never logged.
func readToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("read token file %s: empty", path)
	}
	return token, nil
}

// logStreamError says why a stream ended, at a level that matches what an
// operator must do about it.
func (c *Client) logStreamError(err error, attempt int, delay time.Duration) {
	log := c.o.log.With("target", c.target, "attempt", attempt, "retry_in", delay.Round(time.Millisecond).String())
	switch code := status.Code(err); code {
	case codes.Unauthenticated, codes.PermissionDenied:
		// The server's message says which check failed; it never holds
		// the token. Retrying is right: a projected token is rotated in
		// place, and the next stream reads the file again.
		detail := ""
		var se interface{ GRPCStatus() *status.Status }
		if errors.As(err, &se) {
			detail = se.GRPCStatus().Message()
		}
		log.Error("control plane rejected the edge's credentials; serving on the last good configuration and retrying",
			"code", code.String(), "detail", detail, "token_file", c.o.tokenFile)
	default:
		log.Warn("control plane stream ended; serving on the last good configuration and reconnecting",
			"code", code.String(), "err", err)
	}
}
