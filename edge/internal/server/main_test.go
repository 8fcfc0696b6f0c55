package server

import (
	"os"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/proxydial"
)

func TestMain(m *testing.M) {
	proxydial.Setup()
	os.Exit(m.Run())
}
