package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// envPrefix: every flag --some-name can also be set as CONTROLPLANE_SOME_NAME.
const envPrefix = "CONTROLPLANE_"

// errInClusterMode is the answer when --standalone is missing.
var errInClusterMode = errors.New("in-cluster mode is not implemented yet; use --standalone")

// flags are the command line, after environment defaults.
type flags struct {
	standalone bool
	config     string
	grpcListen string
	stateDir   string
	debounce   time.Duration
	logLevel   slog.Level
	tlsCert    string
	tlsKey     string
}

// parseFlags reads args, with CONTROLPLANE_<NAME> environment variables
// (looked up with lookupEnv) as defaults; a flag on the command line wins.
// It returns flag.ErrHelp after printing the usage for -h/--help.
func parseFlags(args []string, lookupEnv func(string) (string, bool), out io.Writer) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: controlplane --standalone --config FILE [flags]

The k8s-selfhost-repo control plane: holds the upstream registries and each
namespace's policy, pushes them to the edges over gRPC
(selfhost.v1.ConfigDiscoveryService) and serves the admin API
(selfhost.v1.AdminService) with server reflection and grpc.health.v1 on, so
grpcurl list/describe work without a token; every other call needs
"authorization: Bearer <token>". See docs/control-protocol.md.

Every flag can also be set as an environment variable CONTROLPLANE_<FLAG>
(upper case, '-' as '_', e.g. CONTROLPLANE_GRPC_LISTEN); a flag on the
command line wins.

Flags:
`)
		fs.PrintDefaults()
	}
	var envErrs []error
	env := func(name, def string) string {
		if v, ok := lookupEnv(envName(name)); ok {
			return v
		}
		return def
	}
	envBool := func(name string) bool {
		v := env(name, "false")
		b, err := strconv.ParseBool(v)
		if err != nil {
			envErrs = append(envErrs, fmt.Errorf("%s=%q: want true or false", envName(name), v))
		}
		return b
	}
	envDuration := func(name string, def time.Duration) time.Duration {
		v := env(name, def.String())
		d, err := time.ParseDuration(v)
		if err != nil {
			envErrs = append(envErrs, fmt.Errorf("%s=%q: want a duration such as 50ms", envName(name), v))
		}
		return d
	}

	fs.BoolVar(&f.standalone, "standalone", envBool("standalone"), "run without Kubernetes: configuration, tokens and state come from --config (required for now; in-cluster mode comes with the Kubernetes work)")
	fs.StringVar(&f.config, "config", env("config", ""), "standalone YAML configuration: adminTokens, upstreams, namespaces, clash (`FILE`; see docs/control-protocol.md and docs/clash.md)")
	fs.StringVar(&f.grpcListen, "grpc-listen", env("grpc-listen", ":9090"), "address of the gRPC server: edge streams and admin API (`ADDR`)")
	fs.StringVar(&f.stateDir, "state-dir", env("state-dir", ""), "directory of controlplane-state.json, where admin API changes persist (`DIR`; default: the config file's directory)")
	fs.DurationVar(&f.debounce, "debounce", envDuration("debounce", 50*time.Millisecond), "quiet period after a change before it is pushed to edges; 0 pushes at once")
	level := fs.String("log-level", env("log-level", "info"), "log level: debug, info, warn, error")
	fs.StringVar(&f.tlsCert, "tls-cert", env("tls-cert", ""), "serve gRPC over TLS with this certificate (`FILE`, PEM); default: plaintext, for loopback")
	fs.StringVar(&f.tlsKey, "tls-key", env("tls-key", ""), "private key for --tls-cert (`FILE`, PEM)")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if err := errors.Join(envErrs...); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := f.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return f, fmt.Errorf("--log-level %q: want debug, info, warn or error", *level)
	}
	switch {
	case !f.standalone:
		return f, errInClusterMode
	case f.config == "":
		return f, errors.New("--config FILE is required with --standalone")
	case f.debounce < 0:
		return f, errors.New("--debounce must not be negative")
	case (f.tlsCert == "") != (f.tlsKey == ""):
		return f, errors.New("--tls-cert and --tls-key go together")
	}
	return f, nil
}

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}
