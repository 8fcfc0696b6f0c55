// Package server assembles a standalone edge from its Config: storage,
// upstream clients, the pull-through cache and the HTTP listeners. It is
// what cmd/edge calls after parsing flags.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/route"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/fs"
	s3store "github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/s3"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/proxydial"
)

// Config is everything a standalone edge is started with.
type Config struct {
	Listen          string
	MetricsListen   string
	Storage         string // a directory, s3://BUCKET[/PREFIX], or StorageControlPlane (brokered)
	S3Endpoint      string
	S3Region        string
	S3PathStyle     bool
	Upstreams       []string // PREFIX=URL, adding to or overriding the defaults
	CredentialsFile string   // JSON: {"<prefix>": {"username": "...", "password": "..."}}
	Namespace       string
	TagTTL          time.Duration
	SpoolDir        string

	// Version is the edge's build version, reported to the control plane.
	Version string
	// ControlPlane is the gRPC target of the control plane; empty runs the
	// edge on its flags alone. With it, the edge serves nothing (503) until
	// its namespace's snapshot (received, or the persisted one) is applied.
	ControlPlane string
	// ControlPlaneTokenFile holds the bearer token for the control plane
	// (a projected ServiceAccount token); read again on every reconnect.
	ControlPlaneTokenFile string
	// ControlPlaneCAFile, when set, makes the edge dial the control plane
	// over TLS, trusting the CAs in this PEM file (read again on every
	// reconnect) and checking the host of ControlPlane; empty: plaintext.
	ControlPlaneCAFile string
	// StateDir keeps the last good configuration (default
	// <storage>/_state/<namespace>, or ./edge-state/<namespace> with S3
	// storage).
	StateDir string
	// PodName and AdvertiseAddress introduce the edge in its hello
	// (defaults: the host name, the bound listen address).
	PodName          string
	AdvertiseAddress string
	// StatsInterval is how often counters are reported to the control plane.
	StatsInterval time.Duration

	// Proxy are Clash nodes (each value as proxydial.ParseNodes takes it:
	// a YAML/JSON node, a share link, a list, or @FILE) that every
	// upstream is dialled through, in order with failover. They apply
	// while the edge runs on its flags: a control-plane snapshot replaces
	// them with its own proxy selection. Empty: direct.
	Proxy []string
	// ShutdownDelay is how long the edge keeps serving after SIGTERM with
	// /readyz already 503; ShutdownTimeout then bounds the wait for
	// in-flight requests (see DefaultShutdownDelay).
	ShutdownDelay time.Duration
	// StorageGrantTTL bounds how long the broker's answer for an object
	// (and its presigned URL) is reused with --storage=control-plane; at
	// most a minute, 0 means a minute.
	StorageGrantTTL time.Duration
	ShutdownTimeout time.Duration
	// MaxConnections caps the registry listener's open connections; zero
	// or negative: no cap.
	MaxConnections int
	// TLSCert and TLSKey, when set, make the registry listener serve TLS
	// with that pair (re-read when the files change): for a mirror that
	// clients reach over the network rather than on the node's loopback.
	TLSCert, TLSKey string
	// InternalRedirects are upstream prefixes whose redirects and token
	// realms may go to addresses more internal than the upstream's own
	// (loopback, link-local, private); by default they are refused.
	InternalRedirects []string

	// Limits are the namespace's upstream request rate and burst while
	// the edge runs on its flags, and whenever a control-plane policy
	// leaves them zero. Zero values: unlimited.
	Limits UpstreamLimits
	// FillQueueWait bounds how long a cold blob waits for a fill slot
	// before its requests get 429 (0: as long as the fill may take).
	FillQueueWait time.Duration

	// ProxyFirstByteTimeout bounds the wait for the first byte of a new
	// connection through a node (see proxydial.WithFirstByteTimeout);
	// zero means proxydial.DefaultFirstByteTimeout.
	ProxyFirstByteTimeout time.Duration
}

// StorageControlPlane is the --storage value that reaches the shared
// storage through the control plane's storage broker
// (brokerstore.Deferred): the edge holds no storage credentials
// (docs/control-protocol.md, "Storage").
const StorageControlPlane = "control-plane"

// storageKindBrokered is how /readyz and the logs name brokered storage.
const storageKindBrokered = "brokered"

// Credentials are an upstream's username and password.
type Credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// RouteTable builds the routing table: the defaults plus cfg.Upstreams.
func (cfg Config) RouteTable() (*route.Table, error) {
	ups := route.Defaults()
	for _, spec := range cfg.Upstreams {
		prefix, raw, ok := strings.Cut(spec, "=")
		if !ok {
			return nil, fmt.Errorf("--upstream %q: want PREFIX=URL", spec)
		}
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("--upstream %q: %w", prefix, err)
		}
		if u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("--upstream %q: URL must have no path (got %q)", prefix, u.Path)
		}
		u.Path = ""
		up := route.Upstream{Prefix: prefix, URL: u}
		for _, d := range route.Defaults() {
			if d.Prefix == prefix {
				// Overriding a default's URL keeps its aliases and mirror
				// hosts: a Docker Hub mirror still answers ?ns=docker.io.
				up.Aliases, up.Hosts = d.Aliases, d.Hosts
			}
		}
		ups = append(ups, up)
	}
	t, err := route.NewTable(ups)
	if err != nil {
		return nil, fmt.Errorf("--upstream: %w", err)
	}
	return t, nil
}

// LoadCredentials reads the per-upstream credentials file, if any.
func (cfg Config) LoadCredentials() (map[string]Credentials, error) {
	if cfg.CredentialsFile == "" {
		return nil, nil
	}
	data, err := os.ReadFile(cfg.CredentialsFile)
	if err != nil {
		return nil, fmt.Errorf("--upstream-credentials: %w", err)
	}
	creds := map[string]Credentials{}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&creds); err != nil {
		// The decoder's message never contains the file's values beyond a
		// type name, so it is safe to show.
		return nil, fmt.Errorf("--upstream-credentials %s: %w", cfg.CredentialsFile, err)
	}
	for prefix, c := range creds {
		if c.Username == "" || c.Password == "" {
			return nil, fmt.Errorf("--upstream-credentials %s: %q needs username and password", cfg.CredentialsFile, prefix)
		}
	}
	return creds, nil
}

// ProxyNodes parses --proxy. The error names the flag and the entry but
// never echoes a value: node specs hold passwords.
func (cfg Config) ProxyNodes() ([]*clashnode.Node, error) {
	var nodes []*clashnode.Node
	seen := map[string]bool{}
	for i, v := range cfg.Proxy {
		ns, err := proxydial.ParseNodes(v)
		if err != nil {
			return nil, fmt.Errorf("--proxy (value %d): %w", i+1, err)
		}
		for _, n := range ns {
			if seen[n.Name()] {
				return nil, fmt.Errorf("--proxy (value %d): a node named %q is given twice", i+1, n.Name())
			}
			seen[n.Name()] = true
			nodes = append(nodes, n)
		}
	}
	return nodes, nil
}

// OpenStore opens the configured storage. With StorageControlPlane there
// is nothing to open: Run reaches the storage through the control plane.
func (cfg Config) OpenStore(ctx context.Context) (blob.Store, string, error) {
	if cfg.Storage == StorageControlPlane {
		return nil, "", errors.New("--storage=control-plane: the storage is brokered by the control plane, not opened from flags")
	}
	if rest, ok := strings.CutPrefix(cfg.Storage, "s3://"); ok {
		bucket, prefix, _ := strings.Cut(rest, "/")
		if bucket == "" {
			return nil, "", errors.New("--storage s3://BUCKET[/PREFIX]: bucket is empty")
		}
		client, err := s3store.NewClient(ctx, s3store.Options{Endpoint: cfg.S3Endpoint, Region: cfg.S3Region, PathStyle: cfg.S3PathStyle})
		if err != nil {
			return nil, "", fmt.Errorf("--storage: %w", err)
		}
		st, err := s3store.New(client, bucket, prefix)
		if err != nil {
			return nil, "", fmt.Errorf("--storage: %w", err)
		}
		return st, "s3", nil
	}
	if strings.Contains(cfg.Storage, "://") {
		return nil, "", fmt.Errorf("--storage %q: want a directory or s3://BUCKET[/PREFIX]", cfg.Storage)
	}
	st, err := fs.New(cfg.Storage)
	if err != nil {
		return nil, "", fmt.Errorf("--storage: %w", err)
	}
	return st, "filesystem", nil
}
