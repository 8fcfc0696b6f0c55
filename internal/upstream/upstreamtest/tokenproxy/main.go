// Command tokenproxy fronts a real registry (e.g. Debian's docker-registry,
// which has no token service of its own) with upstreamtest.RequireBearer, so
// that end-to-end tests pull through a Docker-Hub-like Bearer challenge.
// Tests outside edge/ cannot import an internal package, but they can build
// and run this command:
//
//	go build -o tokenproxy ./internal/upstream/upstreamtest/tokenproxy
//	tokenproxy -listen 127.0.0.1:0 -backend http://127.0.0.1:5000 -user u:p -private team/secret
//
// It prints "listening on <addr>" once it accepts connections. Token counts
// are served as JSON at /_upstreamtest/stats.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream/upstreamtest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tokenproxy:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	backend := flag.String("backend", "", "registry to front, e.g. http://127.0.0.1:5000")
	users := flag.String("user", "", "comma-separated user:password pairs the token endpoint accepts")
	private := flag.String("private", "", "comma-separated repositories (or prefixes ending in /) anonymous tokens never cover")
	service := flag.String("service", "upstreamtest", "service name in the challenge")
	ttl := flag.Duration("token-ttl", 5*time.Minute, "lifetime of issued tokens")
	flag.Parse()

	target, err := url.Parse(*backend)
	if err != nil || target.Host == "" {
		return fmt.Errorf("-backend must be a URL, got %q", *backend)
	}
	opts := []upstreamtest.TokenOption{upstreamtest.WithService(*service), upstreamtest.WithTokenTTL(*ttl)}
	for _, pair := range splitList(*users) {
		u, p, ok := strings.Cut(pair, ":")
		if !ok {
			return fmt.Errorf("-user wants user:password, got %q", pair)
		}
		opts = append(opts, upstreamtest.WithUser(u, p))
	}
	if repos := splitList(*private); len(repos) > 0 {
		opts = append(opts, upstreamtest.WithPrivate(repos...))
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           upstreamtest.RequireBearer(httputil.NewSingleHostReverseProxy(target), opts...),
		ReadHeaderTimeout: 10 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	fmt.Printf("listening on %s\n", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
