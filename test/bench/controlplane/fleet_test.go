//go:build bench

package controlplane

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// round collects the ACKs of one configuration change: how many clients
// ACKed a snapshot new to them since the round began, and when the last one
// did.
type round struct {
	want  int64
	acked atomic.Int64
	last  atomic.Int64 // UnixNano of the latest ACK
	done  chan struct{}
}

func newRound(n int) *round { return &round{want: int64(n), done: make(chan struct{})} }

func (r *round) record(at time.Time) {
	ns := at.UnixNano()
	for {
		old := r.last.Load()
		if ns <= old || r.last.CompareAndSwap(old, ns) {
			break
		}
	}
	if r.acked.Add(1) == r.want {
		close(r.done)
	}
}

// lastAck is the send time of the round's last ACK.
func (r *round) lastAck() time.Time { return time.Unix(0, r.last.Load()) }

// wait blocks until every client ACKed or timeout passes.
func (r *round) wait(timeout time.Duration) error {
	select {
	case <-r.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%d of %d edges ACKed within %v", r.acked.Load(), r.want, timeout)
	}
}

// fleet is N in-process edges. Each has its own grpc.ClientConn, so its
// own TCP connection to the control plane, as N edge pods would.
type fleet struct {
	cur     atomic.Pointer[round]
	conns   []*grpc.ClientConn
	pods    []string
	acked   []atomic.Pointer[string] // version each client last ACKed, by index
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	streamE atomic.Int64 // streams that ended with an error before close
	closing atomic.Bool
}

// startFleet connects n edges to addr; edge i belongs to namespace
// namespaces[i%len] and authenticates with tokens[that namespace]. It
// returns once every edge has ACKed its first snapshot.
func startFleet(addr string, n int, namespaces []string, tokens map[string]string, timeout time.Duration) (*fleet, error) {
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{cancel: cancel, conns: make([]*grpc.ClientConn, n), pods: make([]string, n), acked: make([]atomic.Pointer[string], n)}
	first := newRound(n)
	f.cur.Store(first)
	// Connections are opened by a few workers: serially, 5 000 handshakes
	// would take longer than the measurement.
	idx := make(chan int)
	errc := make(chan error, n)
	var open sync.WaitGroup
	for w := 0; w < 32; w++ {
		open.Add(1)
		go func() {
			defer open.Done()
			for i := range idx {
				ns := namespaces[i%len(namespaces)]
				if err := f.connect(ctx, addr, i, ns, tokens[ns]); err != nil {
					errc <- fmt.Errorf("edge %d (%s): %w", i, ns, err)
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		idx <- i
	}
	close(idx)
	open.Wait()
	close(errc)
	if err := <-errc; err != nil {
		f.close()
		return nil, err
	}
	if err := first.wait(timeout); err != nil {
		f.close()
		return nil, fmt.Errorf("first snapshots: %w", err)
	}
	return f, nil
}

func (f *fleet) connect(ctx context.Context, addr string, i int, ns, token string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	f.conns[i] = conn
	f.pods[i] = fmt.Sprintf("bench-%05d", i)
	sctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	st, err := selfhostv1.NewConfigDiscoveryServiceClient(conn).StreamConfig(sctx)
	if err != nil {
		return err
	}
	hello := &selfhostv1.Hello{Namespace: ns, Pod: f.pods[i], EdgeVersion: "benchcp"}
	if err := st.Send(&selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_Hello{Hello: hello}}); err != nil {
		return err
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		cur := ""
		for {
			m, err := st.Recv()
			if err != nil {
				if !f.closing.Load() {
					f.streamE.Add(1)
				}
				return
			}
			c := m.GetConfig()
			if c == nil {
				continue
			}
			ack := &selfhostv1.Ack{Version: c.GetVersion(), Nonce: c.GetNonce(), Accepted: true}
			if err := st.Send(&selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_Ack{Ack: ack}}); err != nil {
				if !f.closing.Load() {
					f.streamE.Add(1)
				}
				return
			}
			// The ACK's send time is when this edge is done: the control
			// plane does not expose when it recorded it.
			at := time.Now()
			v := c.GetVersion()
			f.acked[i].Store(&v)
			if v != cur {
				cur = v
				if r := f.cur.Load(); r != nil {
					r.record(at)
				}
			}
		}
	}()
	return nil
}

// begin starts a new round: from now on, each client's next new snapshot
// counts for it. Rounds never overlap (the next change waits for every
// ACK), so "new to this client" means "caused by this change".
func (f *fleet) begin() *round {
	r := newRound(len(f.conns))
	f.cur.Store(r)
	return r
}

// ackedVersion is the version client i last ACKed.
func (f *fleet) ackedVersion(i int) string {
	if p := f.acked[i].Load(); p != nil {
		return *p
	}
	return ""
}

func (f *fleet) close() {
	f.closing.Store(true)
	f.cancel()
	for _, c := range f.conns {
		if c != nil {
			c.Close()
		}
	}
	f.wg.Wait()
}
