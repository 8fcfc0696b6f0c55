package server

import (
	"os"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
)

func TestMain(m *testing.M) {
	clashnode.Setup()
	os.Exit(m.Run())
}
