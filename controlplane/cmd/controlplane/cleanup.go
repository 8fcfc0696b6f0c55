package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/uninstall"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/flagenv"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubeclient"
)

// cleanupFlags are the flags of `controlplane cleanup`.
type cleanupFlags struct {
	kubeconfig string
	namespace  string
	deployment string
	timeout    time.Duration
	logLevel   slog.Level
}

// cleanupEnv maps the cleanup flags to CONTROLPLANE_<FLAG> variables, the
// environment the server reads too (so the chart's CONTROLPLANE_NAMESPACE
// from the downward API works for both): --deployment and --timeout,
// which mean something else to the server, read CONTROLPLANE_CLEANUP_*,
// and the server's variables are known.
func cleanupEnv() flagenv.Options {
	sfs, _ := newServerFlagSet(&flags{}, io.Discard)
	return flagenv.Options{Prefix: envPrefix, Rename: map[string]string{
		"deployment": envPrefix + "CLEANUP_DEPLOYMENT",
		"timeout":    envPrefix + "CLEANUP_TIMEOUT",
	}, Known: flagenv.Options{Prefix: envPrefix}.Vars(sfs)}
}

// newCleanupFlagSet defines the cleanup flags on a new flag set, writing
// into f; usage goes to out. It returns --log-level's raw value.
func newCleanupFlagSet(f *cleanupFlags, out io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("controlplane cleanup", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: controlplane cleanup --namespace NS [flags]

Removes everything the in-cluster control plane created at run time, for
helm uninstall (the chart's pre-delete hook runs it; docs/kubernetes.md,
"Uninstalling"). In this order: scales the control plane's Deployment to 0
and waits until its pods are gone (so no replica recreates anything), then
deletes the MutatingWebhookConfiguration k8s-selfhost-repo-injector, every
object labelled app.kubernetes.io/managed-by=k8s-selfhost-repo-controlplane
in every namespace (the edges' Deployments, Services, pull Secrets,
ServiceAccounts, ConfigMaps and PodDisruptionBudgets, the state ConfigMap),
the webhook TLS Secret and the leader Lease. Running pods keep running;
it is safe to run twice.

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig `FILE`; default: the pod's ServiceAccount")
	fs.StringVar(&f.namespace, "namespace", "", "the release namespace (`NS`, required)")
	fs.StringVar(&f.deployment, "deployment", uninstall.DefaultDeployment, "the control plane's Deployment in --namespace, scaled to 0 first (`NAME`; environment: CONTROLPLANE_CLEANUP_DEPLOYMENT)")
	fs.DurationVar(&f.timeout, "timeout", 3*time.Minute, "give up after this long (the control plane's pods not stopping, an unreachable apiserver); the hook Job's activeDeadlineSeconds should exceed it (environment: CONTROLPLANE_CLEANUP_TIMEOUT)")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	return fs, level
}

// parseCleanupFlags reads the arguments after "cleanup", with the
// CONTROLPLANE_<FLAG> variables of environ under them (cleanupEnv).
func parseCleanupFlags(args, environ []string, out io.Writer) (cleanupFlags, flagenv.Result, error) {
	var f cleanupFlags
	fs, level := newCleanupFlagSet(&f, out)
	res, err := flagenv.Parse(fs, args, environ, cleanupEnv())
	if err != nil {
		return f, res, err
	}
	if fs.NArg() > 0 {
		return f, res, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := f.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return f, res, fmt.Errorf("--log-level %q: want debug, info, warn or error", *level)
	}
	switch {
	case f.namespace == "":
		return f, res, errors.New("--namespace is required")
	case f.deployment == "":
		return f, res, errors.New("--deployment must not be empty")
	case f.timeout <= 0:
		return f, res, errors.New("--timeout must be positive")
	}
	return f, res, nil
}

// runCleanup wires the cleanup flags to uninstall.Run.
func runCleanup(ctx context.Context, f cleanupFlags, log *slog.Logger) error {
	client, err := kubeclient.New(kubeclient.Options{Kubeconfig: f.kubeconfig, UserAgent: "k8s-selfhost-repo-controlplane-cleanup"})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	_, err = uninstall.Run(ctx, uninstall.Options{Client: client, Namespace: f.namespace, Deployment: f.deployment, Logger: log})
	return err
}
