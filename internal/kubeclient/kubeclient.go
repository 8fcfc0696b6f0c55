// Package kubeclient builds the Kubernetes client of every binary that talks
// to the apiserver (the control plane, its cleanup hook and the node-local
// forwarder) in one way: inside a pod from its ServiceAccount, outside one
// from a kubeconfig file, always with a user agent that names the binary in
// the apiserver's audit log.
package kubeclient

import (
	"errors"
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Options say where the client's credentials come from and how it presents
// itself.
type Options struct {
	// Kubeconfig is a kubeconfig file; "" means the pod's ServiceAccount.
	Kubeconfig string
	// UserAgent names the binary; required.
	UserAgent string
	// QPS and Burst limit the client's request rate; zero keeps client-go's
	// defaults (5 and 10).
	QPS   float32
	Burst int
}

// New returns a clientset for o.
func New(o Options) (*kubernetes.Clientset, error) {
	if o.UserAgent == "" {
		return nil, errors.New("kubernetes client: no user agent")
	}
	cfg, err := restConfig(o.Kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = o.UserAgent
	if o.QPS > 0 {
		cfg.QPS = o.QPS
	}
	if o.Burst > 0 {
		cfg.Burst = o.Burst
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return client, nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster Kubernetes config (outside a pod, give --kubeconfig): %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
	}
	return cfg, nil
}
