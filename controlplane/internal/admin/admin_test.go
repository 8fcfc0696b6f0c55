package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/configstore"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// fakeConfig serves one Set and fails changes with err.
type fakeConfig struct {
	set *snapshot.Set
	err error
}

func (f *fakeConfig) Current() *snapshot.Set { return f.set }
func (f *fakeConfig) PutUpstream(context.Context, *selfhostv1.Upstream) (*snapshot.Set, error) {
	return f.set, f.err
}
func (f *fakeConfig) DeleteUpstream(context.Context, string) (*snapshot.Set, error) {
	return f.set, f.err
}

type noEdges struct{}

func (noEdges) Edges(string) []*selfhostv1.EdgeStatus               { return nil }
func (noEdges) EdgeAddress(string) string                           { return "" }
func (noEdges) InvalidateTag(string, *selfhostv1.InvalidateTag) int { return 0 }

func newService(t *testing.T, err error) (*Service, *bytes.Buffer) {
	t.Helper()
	ups := configspec.DefaultUpstreams()
	ups[1].Credentials = &selfhostv1.Credentials{Username: "u", Password: "secret-pw"}
	set, buildErr := snapshot.Builder{}.Build(&config.State{
		Upstreams:  ups,
		Namespaces: map[string]*config.Namespace{"team-a": {PullToken: "secret-pull", EdgeAddress: "127.0.0.1:5000"}},
		Storage: &config.Storage{Bucket: "edge-cache", Endpoint: "http://127.0.0.1:7070", PathStyle: true,
			AccessKeyID: s3KeyID, SecretAccessKey: s3Secret},
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	var logs bytes.Buffer
	return New(&fakeConfig{set: set, err: err}, noEdges{}, slog.New(slog.NewJSONHandler(&logs, nil))), &logs
}

func TestErrorsBecomeCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("put upstream: %w: upstream.url: bad", configspec.ErrInvalid), codes.InvalidArgument},
		{fmt.Errorf("delete upstream x: %w: prefix: no upstream", configstore.ErrNotFound), codes.NotFound},
		{fmt.Errorf("delete upstream x: %w", configstore.ErrInUse), codes.FailedPrecondition},
		{fmt.Errorf("save: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{errors.New("save state /var/x: disk on fire"), codes.Internal},
	}
	for _, tc := range tests {
		t.Run(tc.code.String(), func(t *testing.T) {
			t.Parallel()
			svc, logs := newService(t, tc.err)
			_, err := svc.DeleteUpstream(t.Context(), &selfhostv1.DeleteUpstreamRequest{Prefix: "x"})
			if status.Code(err) != tc.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.code)
			}
			if tc.code == codes.Internal {
				// Details go to the log, once; the caller gets none.
				if strings.Contains(err.Error(), "disk on fire") || !strings.Contains(logs.String(), "disk on fire") {
					t.Fatalf("internal error: response %q, log %q", err, logs.String())
				}
			}
		})
	}
}

func TestGetNamespaceConfigStripsSecretsFromACopy(t *testing.T) {
	t.Parallel()
	svc, _ := newService(t, nil)
	resp, err := svc.GetNamespaceConfig(t.Context(), &selfhostv1.GetNamespaceConfigRequest{Namespace: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	if s := resp.String(); strings.Contains(s, "secret-pw") || strings.Contains(s, "secret-pull") || !resp.GetHasPullToken() {
		t.Fatalf("response: %v", resp)
	}
	// The shared snapshot the edges get still has its secrets.
	ns, _ := svc.config.Current().Namespace("team-a")
	if ns.Config.GetPolicy().GetPullToken() != "secret-pull" || !strings.Contains(ns.Config.String(), "secret-pw") {
		t.Fatal("stripping modified the shared snapshot")
	}
	if proto.Equal(resp.GetConfig(), ns.Config) {
		t.Fatal("response equals the snapshot with secrets")
	}
}
