package harness

// Real proxy servers from Debian for Clash node tests (docs/edge-proxy.md,
// "5. Tests and numbers"): each runs on a free port of its host (127.0.0.1 unless
// ProxyOptions.Host says otherwise) and comes with the Clash node map and the
// share link that reach it. They are the one set of proxy servers of the
// repository's tests: the edge's dialer (internal/proxydial), the control
// plane's prober and manager (controlplane/internal/clash and its server
// tests), test/e2e and test/bench/proxy all start them here.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hintProxies is the install hint of the proxy servers.
const hintProxies = "run test/all.sh once, or: apt-get install -y --no-install-recommends shadowsocks-libev microsocks tinyproxy trojan v2ray"

// ProxyOptions tune a proxy server.
type ProxyOptions struct {
	// Name is the Clash node name (default: the type and port).
	Name string
	// Host is the address the server listens on (default 127.0.0.1).
	Host string
	// Password for ss, trojan and an authenticating SOCKS5 server
	// (default: a fixed test password).
	Password string
	// Username makes microsocks require this user and Password (default:
	// no authentication).
	Username string
	// Cipher for ss (default aes-256-gcm).
	Cipher string
	// AllowFrom are extra client networks for tinyproxy's Allow lines
	// (127.0.0.1 is always allowed), e.g. "10.201.0.0/16".
	AllowFrom []string
	// Wrap, when set, prefixes the command line (e.g. nsenter into a
	// network namespace).
	Wrap []string
}

// ProxyServer is a running proxy server.
type ProxyServer struct {
	// Type is the Clash type: ss, socks5, http, trojan, vmess.
	Type string
	// Name is the Clash node name.
	Name string
	// Host and Port are where it listens; Addr is host:port.
	Host string
	Port int
	Addr string
	// Node is the Clash node map that reaches the server.
	Node map[string]any
	// Link is the share link that reaches the server.
	Link string
	// Password is the secret a client needs ("" for none): tests search
	// logs and responses for it.
	Password string
	// Proc is the server process.
	Proc *Process

	node nodeFunc
}

// nodeFunc builds the Clash node map and the share link of a server on
// port for a node named name.
type nodeFunc func(port int, name string) (map[string]any, string)

// NodeAs is Node under another name: one server behind several nodes.
func (p *ProxyServer) NodeAs(name string) map[string]any {
	m, _ := p.node(p.Port, name)
	return m
}

// LinkAs is Link under another name.
func (p *ProxyServer) LinkAs(name string) string {
	_, link := p.node(p.Port, name)
	return link
}

// NodeJSON returns Node encoded as JSON (ProxyNode.clash_json).
func (p *ProxyServer) NodeJSON() string {
	b, err := json.Marshal(p.Node)
	if err != nil {
		panic(err) // a map of strings and numbers always encodes
	}
	return string(b)
}

// Kill ends the server at once, like a crash.
func (p *ProxyServer) Kill() { p.Proc.Kill() }

// proxyDefaults fills the defaults of o for a server of type typ.
func proxyDefaults(o ProxyOptions) ProxyOptions {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Password == "" {
		o.Password = "harness-proxy-secret"
	}
	if o.Cipher == "" {
		o.Cipher = "aes-256-gcm"
	}
	return o
}

// startProxy runs one server on a free port of o.Host. args builds the
// command line (and writes config files into dir) for a port.
func startProxy(t testing.TB, typ, bin string, o ProxyOptions, args func(dir string, port int) ([]string, error), node nodeFunc) *ProxyServer {
	t.Helper()
	dir := t.TempDir()
	var ps *ProxyServer
	err := startWithPorts(1, func(ports []int) error {
		port := ports[0]
		a, err := args(dir, port)
		if err != nil {
			return err
		}
		cmd := bin
		if len(o.Wrap) > 0 {
			cmd, a = o.Wrap[0], append(append(append([]string(nil), o.Wrap[1:]...), bin), a...)
		}
		p, err := startProcess(typ+"-"+strconv.Itoa(port), cmd, a, nil, dir)
		if err != nil {
			return err
		}
		addr := net.JoinHostPort(o.Host, strconv.Itoa(port))
		err = waitReady(p, func(ctx context.Context) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			return c.Close()
		})
		if err == nil {
			// A server that lost its port to another process exits at
			// once, but the readiness dial may have reached that other
			// process: a server still running a moment later owns the port.
			time.Sleep(100 * time.Millisecond)
			if p.Exited() {
				err = fmt.Errorf("%w: %s exited right after start; log:\n%s", errPortInUse, typ, p.LogTail(8<<10))
			}
		}
		if err != nil {
			p.Stop()
			if strings.Contains(strings.ToLower(p.LogTail(8<<10)), "address already in use") {
				return fmt.Errorf("%w: %v", errPortInUse, err)
			}
			return err
		}
		name := nodeName(o, typ, port)
		m, link := node(port, name)
		pw, _ := m["password"].(string)
		ps = &ProxyServer{Type: typ, Name: name, Host: o.Host, Port: port, Addr: addr, Node: m, Link: link, Password: pw, Proc: p, node: node}
		return nil
	})
	if err != nil {
		t.Fatalf("start %s proxy server: %v", typ, err)
	}
	cleanupProcess(t, ps.Proc)
	return ps
}

func nodeName(o ProxyOptions, typ string, port int) string {
	if o.Name != "" {
		return o.Name
	}
	return fmt.Sprintf("%s-%d", typ, port)
}

// StartShadowsocks starts shadowsocks-libev's ss-server (cipher from
// o.Cipher: aes-256-gcm or chacha20-ietf-poly1305).
func StartShadowsocks(t testing.TB, o ProxyOptions) *ProxyServer {
	t.Helper()
	o = proxyDefaults(o)
	bin := Binary(t, "ss-server", "SS_SERVER", hintProxies)
	return startProxy(t, "ss", bin, o, func(_ string, port int) ([]string, error) {
		return []string{"-s", o.Host, "-p", strconv.Itoa(port), "-k", o.Password, "-m", o.Cipher, "-t", "60"}, nil
	}, func(port int, name string) (map[string]any, string) {
		userinfo := base64.RawURLEncoding.EncodeToString([]byte(o.Cipher + ":" + o.Password))
		link := fmt.Sprintf("ss://%s@%s#%s", userinfo, net.JoinHostPort(o.Host, strconv.Itoa(port)), url.PathEscape(name))
		return map[string]any{"name": name, "type": "ss", "server": o.Host, "port": port,
			"cipher": o.Cipher, "password": o.Password, "udp": false}, link
	})
}

// StartMicrosocks starts microsocks, a SOCKS5 server: without
// authentication, or requiring o.Username and o.Password.
func StartMicrosocks(t testing.TB, o ProxyOptions) *ProxyServer {
	t.Helper()
	o = proxyDefaults(o)
	bin := Binary(t, "microsocks", "MICROSOCKS", hintProxies)
	return startProxy(t, "socks5", bin, o, func(_ string, port int) ([]string, error) {
		args := []string{"-i", o.Host, "-p", strconv.Itoa(port)}
		if o.Username != "" {
			args = append(args, "-u", o.Username, "-P", o.Password)
		}
		return args, nil
	}, func(port int, name string) (map[string]any, string) {
		m := map[string]any{"name": name, "type": "socks5", "server": o.Host, "port": port, "udp": false}
		user := ""
		if o.Username != "" {
			m["username"], m["password"] = o.Username, o.Password
			user = url.UserPassword(o.Username, o.Password).String() + "@"
		}
		link := fmt.Sprintf("socks5://%s%s#%s", user, net.JoinHostPort(o.Host, strconv.Itoa(port)), url.PathEscape(name))
		return m, link
	})
}

// StartTinyproxy starts tinyproxy, an HTTP proxy. Its configuration has no
// ConnectPort lines, so CONNECT reaches any port.
func StartTinyproxy(t testing.TB, o ProxyOptions) *ProxyServer {
	t.Helper()
	o = proxyDefaults(o)
	bin := Binary(t, "tinyproxy", "TINYPROXY", hintProxies)
	return startProxy(t, "http", bin, o, func(dir string, port int) ([]string, error) {
		var allow strings.Builder
		for _, a := range append([]string{"127.0.0.1"}, o.AllowFrom...) {
			fmt.Fprintf(&allow, "Allow %s\n", a)
		}
		user := ""
		if os.Geteuid() == 0 {
			// tinyproxy drops root privileges to nobody by default, which
			// cannot write the test's temp directory.
			user = "User root\nGroup root\n"
		}
		conf := fmt.Sprintf("Port %d\nListen %s\nTimeout 600\nMaxClients 200\nLogLevel Warning\nDisableViaHeader Yes\n%s%s",
			port, o.Host, allow.String(), user)
		path := filepath.Join(dir, fmt.Sprintf("tinyproxy-%d.conf", port))
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			return nil, fmt.Errorf("write tinyproxy config: %w", err)
		}
		return []string{"-d", "-c", path}, nil
	}, func(port int, name string) (map[string]any, string) {
		link := fmt.Sprintf("http://%s#%s", net.JoinHostPort(o.Host, strconv.Itoa(port)), url.PathEscape(name))
		return map[string]any{"name": name, "type": "http", "server": o.Host, "port": port}, link
	})
}

// StartTrojan starts trojan with a self-signed certificate made here; the
// node map sets skip-cert-verify.
func StartTrojan(t testing.TB, o ProxyOptions) *ProxyServer {
	t.Helper()
	o = proxyDefaults(o)
	bin := Binary(t, "trojan", "TROJAN", hintProxies)
	return startProxy(t, "trojan", bin, o, func(dir string, port int) ([]string, error) {
		cert, key, err := writeSelfSigned(dir, o.Host)
		if err != nil {
			return nil, err
		}
		cfg := map[string]any{
			"run_type": "server", "local_addr": o.Host, "local_port": port,
			// Where non-trojan traffic goes: a closed port.
			"remote_addr": "127.0.0.1", "remote_port": 9,
			"password": []string{o.Password}, "log_level": 1,
			"ssl": map[string]any{"cert": cert, "key": key, "alpn": []string{"http/1.1"}},
			"tcp": map[string]any{"no_delay": true, "keep_alive": true},
		}
		b, _ := json.Marshal(cfg)
		path := filepath.Join(dir, fmt.Sprintf("trojan-%d.json", port))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("write trojan config: %w", err)
		}
		return []string{"-c", path}, nil
	}, func(port int, name string) (map[string]any, string) {
		link := fmt.Sprintf("trojan://%s@%s?allowInsecure=1&sni=localhost#%s", url.PathEscape(o.Password),
			net.JoinHostPort(o.Host, strconv.Itoa(port)), url.PathEscape(name))
		return map[string]any{"name": name, "type": "trojan", "server": o.Host, "port": port,
			"password": o.Password, "sni": "localhost", "skip-cert-verify": true, "udp": false}, link
	})
}

// vmessTestUUID is the vmess user id of StartV2RayVmess.
const vmessTestUUID = "6f1b8a5e-2a7d-4c3e-9b1f-0d2e3c4b5a69"

// StartV2RayVmess starts v2ray with one vmess inbound (alterId 0, AEAD).
func StartV2RayVmess(t testing.TB, o ProxyOptions) *ProxyServer {
	t.Helper()
	o = proxyDefaults(o)
	bin := Binary(t, "v2ray", "V2RAY", hintProxies)
	return startProxy(t, "vmess", bin, o, func(dir string, port int) ([]string, error) {
		cfg := map[string]any{
			"log": map[string]any{"loglevel": "warning"},
			"inbounds": []any{map[string]any{"listen": o.Host, "port": port, "protocol": "vmess",
				"settings": map[string]any{"clients": []any{map[string]any{"id": vmessTestUUID, "alterId": 0}}}}},
			"outbounds": []any{map[string]any{"protocol": "freedom"}},
		}
		b, _ := json.Marshal(cfg)
		path := filepath.Join(dir, fmt.Sprintf("v2ray-%d.json", port))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("write v2ray config: %w", err)
		}
		return []string{"-config", path}, nil
	}, func(port int, name string) (map[string]any, string) {
		v, _ := json.Marshal(map[string]any{"v": "2", "ps": name, "add": o.Host, "port": strconv.Itoa(port),
			"id": vmessTestUUID, "aid": "0", "net": "tcp", "type": "none", "tls": "", "scy": "auto"})
		return map[string]any{"name": name, "type": "vmess", "server": o.Host, "port": port,
			"uuid": vmessTestUUID, "alterId": 0, "cipher": "auto", "udp": false}, "vmess://" + base64.StdEncoding.EncodeToString(v)
	})
}

// StartNativeClient starts the proxy's own client for server as a SOCKS5
// server on a free 127.0.0.1 port and returns its address: ss-local for
// ss, trojan in client mode for trojan, v2ray with a socks inbound for
// vmess. It is the baseline the edge's mihomo client is measured against.
func StartNativeClient(t testing.TB, server *ProxyServer) string {
	t.Helper()
	password, _ := server.Node["password"].(string)
	o := proxyDefaults(ProxyOptions{Name: server.Type + "-client"})
	node := func(int, string) (map[string]any, string) { return map[string]any{"name": o.Name}, "" }
	writeJSON := func(dir, name string, v any) (string, error) {
		b, _ := json.Marshal(v)
		path := filepath.Join(dir, name)
		return path, os.WriteFile(path, b, 0o600)
	}
	var ps *ProxyServer
	switch server.Type {
	case "ss":
		cipher, _ := server.Node["cipher"].(string)
		ps = startProxy(t, "ss-local", Binary(t, "ss-local", "SS_LOCAL", hintProxies), o, func(_ string, port int) ([]string, error) {
			return []string{"-s", server.Host, "-p", strconv.Itoa(server.Port), "-b", "127.0.0.1", "-l", strconv.Itoa(port),
				"-k", password, "-m", cipher, "-t", "60"}, nil
		}, node)
	case "trojan":
		ps = startProxy(t, "trojan-client", Binary(t, "trojan", "TROJAN", hintProxies), o, func(dir string, port int) ([]string, error) {
			path, err := writeJSON(dir, fmt.Sprintf("trojan-client-%d.json", port), map[string]any{
				"run_type": "client", "local_addr": "127.0.0.1", "local_port": port,
				"remote_addr": server.Host, "remote_port": server.Port, "password": []string{password}, "log_level": 1,
				"ssl": map[string]any{"verify": false, "verify_hostname": false, "sni": "localhost", "alpn": []string{"http/1.1"}},
				"tcp": map[string]any{"no_delay": true, "keep_alive": true},
			})
			return []string{"-c", path}, err
		}, node)
	case "vmess":
		ps = startProxy(t, "v2ray-client", Binary(t, "v2ray", "V2RAY", hintProxies), o, func(dir string, port int) ([]string, error) {
			path, err := writeJSON(dir, fmt.Sprintf("v2ray-client-%d.json", port), map[string]any{
				"log": map[string]any{"loglevel": "warning"},
				"inbounds": []any{map[string]any{"listen": "127.0.0.1", "port": port, "protocol": "socks",
					"settings": map[string]any{"auth": "noauth", "udp": false}}},
				"outbounds": []any{map[string]any{"protocol": "vmess", "settings": map[string]any{"vnext": []any{map[string]any{
					"address": server.Host, "port": server.Port,
					"users": []any{map[string]any{"id": vmessTestUUID, "alterId": 0, "security": "auto"}}}}}}},
			})
			return []string{"-config", path}, err
		}, node)
	default:
		t.Fatalf("no native client for %s nodes: socks5 and http proxies are used by curl directly", server.Type)
	}
	return ps.Addr
}

// writeSelfSigned writes a self-signed ECDSA certificate for host (and
// localhost) and its key into dir and returns their paths.
func writeSelfSigned(dir, host string) (certPath, keyPath string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}
