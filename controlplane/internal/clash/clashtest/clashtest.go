// Package clashtest starts real proxy servers from Debian on loopback —
// shadowsocks-libev's ss-server, microsocks (SOCKS5) and tinyproxy (HTTP)
// — plus the HTTP servers a Clash test needs: a probe target that answers
// like a registry's /v2/, and a subscription server. Each server belongs
// to the test that started it and is killed when it ends.
//
// A missing binary fails the test with the apt-get command that installs
// it (test/all.sh installs them); it never skips. The helpers use only the
// standard library, so the edge's tests can keep a copy.
package clashtest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Server is one proxy server process on 127.0.0.1.
type Server struct {
	// Type is the Clash type of a node for it: "ss", "socks5" or "http".
	Type string
	// Port it listens on (127.0.0.1).
	Port int
	// Cipher and Password of an ss-server; Username and Password of an
	// authenticating SOCKS5 server.
	Cipher, Username, Password string

	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has exited
	output *syncBuffer
	killed sync.Once
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// Node is the server as a Clash proxy map named name.
func (s *Server) Node(name string) map[string]any {
	m := map[string]any{"name": name, "type": s.Type, "server": "127.0.0.1", "port": s.Port}
	switch s.Type {
	case "ss":
		m["cipher"], m["password"] = s.Cipher, s.Password
	case "socks5":
		if s.Username != "" {
			m["username"], m["password"] = s.Username, s.Password
		}
	}
	return m
}

// Link is the server as a share link named name (ss://, socks5://,
// http://).
func (s *Server) Link(name string) string {
	frag := "#" + url.PathEscape(name)
	switch s.Type {
	case "ss":
		user := base64.RawURLEncoding.EncodeToString([]byte(s.Cipher + ":" + s.Password))
		return "ss://" + user + "@" + s.Addr() + frag
	case "socks5":
		if s.Username != "" {
			return "socks5://" + url.UserPassword(s.Username, s.Password).String() + "@" + s.Addr() + frag
		}
		return "socks5://" + s.Addr() + frag
	}
	return "http://" + s.Addr() + frag
}

// Kill stops the server (SIGKILL) and waits for it to exit: a node that
// dies.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.killed.Do(func() { _ = s.cmd.Process.Kill() })
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s (pid %d) did not exit after SIGKILL", s.cmd.Path, s.cmd.Process.Pid)
	}
}

// StartSS starts ss-server with cipher (e.g. "aes-256-gcm",
// "chacha20-ietf-poly1305") and a random password.
func StartSS(t testing.TB, cipher string) *Server {
	t.Helper()
	bin := need(t, "ss-server", "shadowsocks-libev")
	pw := "ss-pw-" + randomHex(t, 8)
	return start(t, &Server{Type: "ss", Cipher: cipher, Password: pw}, func(port int) *exec.Cmd {
		return exec.Command(bin, "-s", "127.0.0.1", "-p", strconv.Itoa(port), "-k", pw, "-m", cipher)
	})
}

// StartSOCKS5 starts microsocks; with a username it requires that user and
// a random password.
func StartSOCKS5(t testing.TB, username string) *Server {
	t.Helper()
	bin := need(t, "microsocks", "microsocks")
	s := &Server{Type: "socks5", Username: username}
	if username != "" {
		s.Password = "socks-pw-" + randomHex(t, 8)
	}
	return start(t, s, func(port int) *exec.Cmd {
		args := []string{"-i", "127.0.0.1", "-p", strconv.Itoa(port)}
		if username != "" {
			args = append(args, "-u", username, "-P", s.Password)
		}
		return exec.Command(bin, args...)
	})
}

// StartHTTPProxy starts tinyproxy in the foreground with its own config
// file: loopback only, and no ConnectPort lines, so CONNECT (which mihomo's
// http adapter always uses) reaches any port.
func StartHTTPProxy(t testing.TB) *Server {
	t.Helper()
	bin := need(t, "tinyproxy", "tinyproxy")
	dir := t.TempDir()
	return start(t, &Server{Type: "http"}, func(port int) *exec.Cmd {
		conf := filepath.Join(dir, fmt.Sprintf("tinyproxy-%d.conf", port))
		content := fmt.Sprintf("Port %d\nListen 127.0.0.1\nTimeout 60\nMaxClients 64\nAllow 127.0.0.1\nLogLevel Error\nDisableViaHeader Yes\n", port)
		if err := os.WriteFile(conf, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return exec.Command(bin, "-d", "-c", conf)
	})
}

// start runs the command cmdFor builds for a free port until the port
// accepts connections; a port taken in between is retried on another.
func start(t testing.TB, s *Server, cmdFor func(port int) *exec.Cmd) *Server {
	t.Helper()
	var last error
	for range 3 {
		port := FreePort(t)
		cmd := cmdFor(port)
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", cmd.Path, err)
		}
		s.Port, s.cmd, s.output, s.done = port, cmd, out, make(chan struct{})
		go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(s.done)
		if last = waitListening(s); last == nil {
			t.Cleanup(func() {
				s.killed.Do(func() { _ = cmd.Process.Kill() })
				<-s.done
			})
			return s
		}
		_ = cmd.Process.Kill()
		<-s.done
	}
	t.Fatalf("%s did not start: %v\noutput:\n%s", s.cmd.Path, last, s.output)
	return nil
}

func waitListening(s *Server) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		select {
		case <-s.done:
			return fmt.Errorf("exited early: %v", s.cmd.ProcessState)
		default:
		}
		c, err := net.DialTimeout("tcp", s.Addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("port %d not listening after 5s: %w", s.Port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// need finds bin on PATH (or in /usr/sbin, /usr/bin) and fails the test
// with the package to install when it is missing.
func need(t testing.TB, bin, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(bin); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
		if p := filepath.Join(dir, bin); isExecutable(p) {
			return p
		}
	}
	t.Fatalf("%s is not installed: apt-get install -y %s (test/all.sh installs it)", bin, pkg)
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ClosedPort returns a loopback port nothing listens on: a node there
// fails at once (connection refused).
func ClosedPort(t testing.TB) int { return FreePort(t) }

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
