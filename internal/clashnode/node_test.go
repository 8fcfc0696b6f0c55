package clashnode

import (
	"errors"
	"strings"
	"testing"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

func TestFromJSON(t *testing.T) {
	t.Parallel()
	n, err := FromJSON("from-cp", `{"name":"other","type":"socks5","server":"127.0.0.1","port":1080}`)
	if err != nil || n.Name() != "from-cp" {
		t.Fatalf("FromJSON = %v, %v; want the control plane's name", n, err)
	}
	again, _ := FromJSON("from-cp", `{"port":1080,"server":"127.0.0.1","type":"socks5","name":"x"}`)
	if again.Fingerprint() != n.Fingerprint() {
		t.Errorf("fingerprint depends on key order or the map's own name")
	}
	other, _ := FromJSON("from-cp", `{"type":"socks5","server":"127.0.0.1","port":1081}`)
	if other.Fingerprint() == n.Fingerprint() {
		t.Errorf("different ports, same fingerprint")
	}
	for _, bad := range []string{"", "null", "[]", `"x"`, "{"} {
		if _, err := FromJSON("n", bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("FromJSON(%q) err = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestFromProto(t *testing.T) {
	t.Parallel()
	const js = `{"type":"socks5","server":"127.0.0.1","port":1080,"password":"proto-Secret"}`
	n, err := FromProto(&selfhostv1.ProxyNode{Name: "a", Type: "SOCKS5", ClashJson: js})
	if err != nil {
		t.Fatal(err)
	}
	back := n.Proto()
	if back.GetName() != "a" || back.GetType() != "socks5" || back.GetClashJson() != n.JSON() {
		t.Errorf("Proto() = %v", back)
	}
	_, err = FromProto(&selfhostv1.ProxyNode{Name: "b", Type: "ss", ClashJson: js})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "differs") || strings.Contains(err.Error(), "proto-Secret") {
		t.Errorf("type mismatch: err = %v", err)
	}
}
