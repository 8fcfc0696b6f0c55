package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/uninstall"
)

// cleanupFlags are the flags of `controlplane cleanup`.
type cleanupFlags struct {
	kubeconfig string
	namespace  string
	deployment string
	timeout    time.Duration
	logLevel   slog.Level
}

// parseCleanupFlags reads the arguments after "cleanup", with the same
// CONTROLPLANE_<FLAG> environment defaults as the server (so the chart's
// CONTROLPLANE_NAMESPACE from the downward API works for both).
func parseCleanupFlags(args []string, lookupEnv func(string) (string, bool), out io.Writer) (cleanupFlags, error) {
	var f cleanupFlags
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
	env := func(name, def string) string {
		if v, ok := lookupEnv(envName(name)); ok {
			return v
		}
		return def
	}
	fs.StringVar(&f.kubeconfig, "kubeconfig", env("kubeconfig", ""), "kubeconfig `FILE`; default: the pod's ServiceAccount")
	fs.StringVar(&f.namespace, "namespace", env("namespace", ""), "the release namespace (`NS`, required)")
	fs.StringVar(&f.deployment, "deployment", env("cleanup-deployment", uninstall.DefaultDeployment), "the control plane's Deployment in --namespace, scaled to 0 first (`NAME`)")
	timeout, err := time.ParseDuration(env("cleanup-timeout", "3m"))
	if err != nil {
		return f, fmt.Errorf("%s: want a duration such as 3m", envName("cleanup-timeout"))
	}
	fs.DurationVar(&f.timeout, "timeout", timeout, "give up after this long (the control plane's pods not stopping, an unreachable apiserver); the hook Job's activeDeadlineSeconds should exceed it")
	level := fs.String("log-level", env("log-level", "info"), "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := f.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return f, fmt.Errorf("--log-level %q: want debug, info, warn or error", *level)
	}
	switch {
	case f.namespace == "":
		return f, errors.New("--namespace is required")
	case f.deployment == "":
		return f, errors.New("--deployment must not be empty")
	case f.timeout <= 0:
		return f, errors.New("--timeout must be positive")
	}
	return f, nil
}

// runCleanup wires the cleanup flags to uninstall.Run.
func runCleanup(ctx context.Context, f cleanupFlags, log *slog.Logger) error {
	restCfg, err := restConfig(f.kubeconfig)
	if err != nil {
		return err
	}
	restCfg.UserAgent = "k8s-selfhost-repo-controlplane-cleanup"
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	_, err = uninstall.Run(ctx, uninstall.Options{Client: client, Namespace: f.namespace, Deployment: f.deployment, Logger: log})
	return err
}
