package clash

import (
	"fmt"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
)

// Skipped is a subscription entry that could not be used, with its
// reason (clashnode.Skipped, named here for the admin API).
type Skipped = clashnode.Skipped

// Parse reads a subscription with clashnode.Parse — Clash YAML or share
// links, plain or base64 — under the control plane's rules for node names
// (config.CheckNodeName; "auto" and "direct" are reserved). A bad entry is
// skipped with its reason, never the whole subscription; the error (wrapping
// ErrSubscription) is for input that is not a subscription at all or holds
// no usable node.
func Parse(data []byte) (*clashnode.List, error) {
	sub, err := clashnode.Parse(data, clashnode.ParseOptions{CheckName: checkNodeName})
	if err != nil {
		return sub, fmt.Errorf("%w: %w", ErrSubscription, err)
	}
	return sub, nil
}

// checkNodeName applies the control plane's naming rules: a node name
// must be usable as an upstream's proxy: value.
func checkNodeName(name string) error {
	if err := config.CheckNodeName(name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if config.IsReservedNodeName(name) {
		return fmt.Errorf("name %q is reserved (it means something else in upstream.proxy)", name)
	}
	return nil
}
