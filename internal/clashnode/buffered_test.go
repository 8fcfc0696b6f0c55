package clashnode

import "testing"

func TestDialerFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		typ      string
		m        map[string]any
		buffered bool
		opts     int
	}{
		{"plain ss", "ss", map[string]any{}, true, 0},
		{"vmess over tcp", "vmess", map[string]any{"network": "tcp"}, true, 0},
		{"vmess over ws", "vmess", map[string]any{"network": "ws"}, false, 0},
		{"trojan over grpc", "trojan", map[string]any{"network": "grpc"}, false, 0},
		{"smux", "ss", map[string]any{"smux": map[string]any{"enabled": true}}, false, 0},
		{"smux off", "ss", map[string]any{"smux": map[string]any{"enabled": false}}, true, 0},
		{"chain", "socks5", map[string]any{"dialer-proxy": "other"}, false, 0},
		{"hysteria2", "hysteria2", map[string]any{}, false, 0},
		{"socket options", "http", map[string]any{"interface-name": "eth0", "routing-mark": float64(255),
			"ip-version": "ipv6-prefer", "tfo": true, "mptcp": true}, true, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := dialerFor(tt.typ, tt.m) != nil; got != tt.buffered {
				t.Errorf("buffered = %v, want %v", got, tt.buffered)
			}
			if got := len(dialOptions(tt.m)); got != tt.opts {
				t.Errorf("%d dial options, want %d", got, tt.opts)
			}
		})
	}
}
