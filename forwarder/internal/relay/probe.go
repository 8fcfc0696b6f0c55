package relay

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Path says who answers a node's loopback node port.
type Path string

const (
	// PathNodePort means the Service proxy (kube-proxy in iptables mode,
	// or nftables with its loopback NodePort gate) answers
	// 127.0.0.1:<nodePort> before the forwarder's listener sees the
	// connection.
	PathNodePort Path = "nodePort"
	// PathForwarder means the connection reached the forwarder's own
	// listener; the forwarder carries it to the edge.
	PathForwarder Path = "forwarder"
)

// Probe finds out who answers the route on port: it dials Host:port and
// watches whether the connection arrives at the relay's own listener
// (PathForwarder). If it does not within wait, it asks the other end for
// GET /v2/: an HTTP answer means the Service proxy carried the
// connection to a registry (PathNodePort). Anything else is an error:
// nothing usable answers that address on this node.
//
// The probe sends nothing through the relay's listener, and to the edge
// only an unauthenticated GET /v2/.
func (r *Relay) Probe(ctx context.Context, portNum int, wait time.Duration) (Path, error) {
	r.probeMu.Lock()
	defer r.probeMu.Unlock()
	r.mu.Lock()
	p := r.ports[portNum]
	r.mu.Unlock()
	if p == nil {
		return "", fmt.Errorf("probe port %d: no route", portNum)
	}
	seen := make(chan netip.AddrPort, 64)
	p.probe.Store(&seen)
	defer p.probe.Store(nil)

	addr := netip.AddrPortFrom(r.host, uint16(portNum))
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return "", fmt.Errorf("probe %s: %w", addr, err)
	}
	defer func() { _ = c.Close() }()
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	timer := time.NewTimer(wait)
	defer timer.Stop()
wait:
	for {
		select {
		case from := <-seen:
			if from == local {
				return PathForwarder, nil
			}
		case <-timer.C:
			break wait
		case <-ctx.Done():
			return "", fmt.Errorf("probe %s: %w", addr, ctx.Err())
		}
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(deadline)
	} else {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	}
	req := "GET /v2/ HTTP/1.1\r\nHost: " + addr.String() + "\r\nUser-Agent: selfhost-forwarder-probe\r\nConnection: close\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		return "", fmt.Errorf("probe %s: not the forwarder, and the other end does not take a request: %w", addr, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("probe %s: not the forwarder, and no HTTP answer: %w", addr, err)
	}
	if f := strings.Fields(line); len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") || !isStatus(f[1]) {
		return "", fmt.Errorf("probe %s: not the forwarder, and not an HTTP answer: %q", addr, line)
	}
	return PathNodePort, nil
}

func isStatus(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 100 && n < 600
}
