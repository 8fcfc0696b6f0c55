package webhookconfig

import (
	"errors"
	"slices"
	"testing"
)

// TestOptionsGRPCHosts: the gRPC port shares the serving certificate
// (ExtraHosts), also when the webhook is disabled (ConfigurationDisabled).
func TestOptionsGRPCHosts(t *testing.T) {
	t.Parallel()
	grpc := []string{"cp.sys.svc.cluster.local", "127.0.0.1"}
	tests := []struct {
		name      string
		opts      Options
		wantHosts []string
		wantErr   bool
	}{
		{"service plus gRPC names", Options{Namespace: "sys", Service: &Service{Name: "cp"}, ExtraHosts: grpc},
			[]string{"cp", "cp.sys", "cp.sys.svc", "cp.sys.svc.cluster.local", "127.0.0.1"}, false},
		{"webhook disabled: gRPC names only", Options{Namespace: "sys", ConfigurationDisabled: true, ExtraHosts: grpc}, grpc, false},
		{"webhook disabled without hosts", Options{Namespace: "sys", ConfigurationDisabled: true}, nil, true},
		{"no target and configuration wanted", Options{Namespace: "sys", ExtraHosts: grpc}, nil, true},
		{"bad extra host", Options{Namespace: "sys", ConfigurationDisabled: true, ExtraHosts: []string{"not a host"}}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tc.opts.withDefaults()
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidOptions) {
					t.Fatalf("err = %v, want ErrInvalidOptions", err)
				}
				return
			}
			if err != nil || !slices.Equal(got.Hosts, tc.wantHosts) {
				t.Fatalf("Hosts = %q, %v; want %q", got.Hosts, err, tc.wantHosts)
			}
		})
	}
}
