package push

import (
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// conn is one edge's stream. The fields above mu are fixed at hello; the
// rest change as the stream runs and are read by the admin API.
type conn struct {
	id          uint64
	ns          string
	pod         string
	address     string
	edgeVersion string
	since       time.Time
	// wake is the one-slot mailbox: a pending wake-up means "send what is
	// current now", so any number of changes cost one send.
	wake chan struct{}

	mu            sync.Mutex
	sentVersion   string
	sentNonce     string
	ackedVersion  string
	nackReason    string
	stats         *selfhostv1.EdgeStats
	invalidations []*selfhostv1.InvalidateTag
}

func (c *conn) wakeUp() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) enqueueInvalidation(t *selfhostv1.InvalidateTag, limit int) bool {
	c.mu.Lock()
	if len(c.invalidations) >= limit {
		c.mu.Unlock()
		return false
	}
	c.invalidations = append(c.invalidations, proto.CloneOf(t))
	c.mu.Unlock()
	c.wakeUp()
	return true
}

func (c *conn) takeInvalidations() []*selfhostv1.InvalidateTag {
	c.mu.Lock()
	defer c.mu.Unlock()
	inv := c.invalidations
	c.invalidations = nil
	return inv
}

func (c *conn) sent() (version, nonce string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sentVersion, c.sentNonce
}

func (c *conn) recordSent(version, nonce string) {
	c.mu.Lock()
	c.sentVersion, c.sentNonce = version, nonce
	c.mu.Unlock()
}

func (c *conn) recordStats(st *selfhostv1.EdgeStats) {
	st = proto.CloneOf(st)
	c.mu.Lock()
	c.stats = st
	c.mu.Unlock()
}

// ackResult is what an Ack did to the connection's state.
type ackResult int

const (
	ackStale    ackResult = iota // nonce is not the last one sent: ignored
	ackMismatch                  // right nonce, other version: ignored
	ackAccepted
	ackRejected
)

// maxNackReason bounds what an edge can make the control plane store.
const maxNackReason = 1024

func (c *conn) recordAck(a *selfhostv1.Ack) ackResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case a.GetNonce() != c.sentNonce:
		return ackStale
	case a.GetVersion() != c.sentVersion:
		return ackMismatch
	case a.GetAccepted():
		c.ackedVersion, c.nackReason = a.GetVersion(), ""
		return ackAccepted
	}
	reason := a.GetErrorDetail()
	if reason == "" {
		reason = "rejected without a reason"
	}
	if len(reason) > maxNackReason {
		// Cut on a rune boundary: the reason is returned in a proto string.
		reason = strings.ToValidUTF8(reason[:maxNackReason], "") + "…"
	}
	c.nackReason = reason
	return ackRejected
}

func (c *conn) status() *selfhostv1.EdgeStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &selfhostv1.EdgeStatus{
		Namespace:      c.ns,
		Pod:            c.pod,
		Address:        c.address,
		ConnectedSince: timestamppb.New(c.since),
		AckedVersion:   c.ackedVersion,
		SentVersion:    c.sentVersion,
		NackReason:     c.nackReason,
		Stats:          proto.CloneOf(c.stats),
		EdgeVersion:    c.edgeVersion,
	}
}
