package proxydial

import "github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"

// Node is the one Clash node type of the repository (internal/clashnode);
// the name is kept so the edge's code reads as it did.
type Node = clashnode.Node

// ErrInvalidNode marks a node or a --proxy value that cannot be used; it
// is clashnode.ErrInvalid.
var ErrInvalidNode = clashnode.ErrInvalid

// Setup makes mihomo's process-wide settings now rather than when the
// first node is built (clashnode.Setup, which documents them).
func Setup() { clashnode.Setup() }
