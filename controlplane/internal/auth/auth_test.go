package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestParseBearer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		values []string
		token  string
		err    error
	}{
		{"ok", []string{"Bearer abc.DEF-_~+/="}, "abc.DEF-_~+/=", nil},
		{"scheme case", []string{"bEaReR tok"}, "tok", nil},
		{"none", nil, "", ErrMissing},
		{"two", []string{"Bearer a", "Bearer b"}, "", ErrMalformed},
		{"basic", []string{"Basic dTpw"}, "", ErrMalformed},
		{"no space", []string{"Bearertok"}, "", ErrMalformed},
		{"empty token", []string{"Bearer "}, "", ErrMalformed},
		{"space in token", []string{"Bearer a b"}, "", ErrMalformed},
		{"only padding", []string{"Bearer =="}, "", ErrMalformed},
		{"non-ascii", []string{"Bearer tökén"}, "", ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tok, err := ParseBearer(tc.values)
			if tok != tc.token || !errors.Is(err, tc.err) {
				t.Fatalf("ParseBearer(%q) = %q, %v; want %q, %v", tc.values, tok, err, tc.token, tc.err)
			}
		})
	}
}

func TestStaticTokens(t *testing.T) {
	t.Parallel()
	a, err := NewStaticTokens([]string{"admin-token-000000"}, map[string]string{"team-a": "edge-token-aaaaaa"})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := a.Authenticate(t.Context(), "edge-token-aaaaaa"); err != nil || id.Kind != KindEdge || id.Namespace != "team-a" {
		t.Fatalf("edge: %+v, %v", id, err)
	}
	if id, err := a.Authenticate(t.Context(), "admin-token-000000"); err != nil || id.Kind != KindAdmin || id.Name != "admin#0" {
		t.Fatalf("admin: %+v, %v", id, err)
	}
	if _, err := a.Authenticate(t.Context(), "nope"); !errors.Is(err, ErrUnknown) {
		t.Fatalf("unknown: %v", err)
	}
	if _, err := NewStaticTokens([]string{"same-token-000000"}, map[string]string{"x": "same-token-000000"}); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate: %v", err)
	}
}

func TestInterceptorPolicy(t *testing.T) {
	t.Parallel()
	authn, err := NewStaticTokens([]string{"admin-token-000000"}, map[string]string{"team-a": "edge-token-aaaaaa"})
	if err != nil {
		t.Fatal(err)
	}
	policy := Policy{"svc.Admin": RequireAdmin, "svc.Edge": RequireEdge, "svc.Public": Public, "svc.Any": RequireAuthenticated}
	unary := UnaryInterceptor(authn, policy)
	tests := []struct {
		name, method, token string
		code                codes.Code
	}{
		{"public without token", "/svc.Public/Get", "", codes.OK},
		{"admin", "/svc.Admin/Get", "admin-token-000000", codes.OK},
		{"edge", "/svc.Edge/Get", "edge-token-aaaaaa", codes.OK},
		{"admin on edge", "/svc.Edge/Get", "admin-token-000000", codes.PermissionDenied},
		{"edge on admin", "/svc.Admin/Get", "edge-token-aaaaaa", codes.PermissionDenied},
		{"unlisted service needs admin", "/svc.New/Get", "edge-token-aaaaaa", codes.PermissionDenied},
		{"unlisted service without token", "/svc.New/Get", "", codes.Unauthenticated},
		{"unknown", "/svc.Admin/Get", "unknown-token-00000", codes.Unauthenticated},
		{"any: admin", "/svc.Any/Get", "admin-token-000000", codes.OK},
		{"any: edge", "/svc.Any/Get", "edge-token-aaaaaa", codes.OK},
		{"any: without token", "/svc.Any/Get", "", codes.Unauthenticated},
		{"any: unknown", "/svc.Any/Get", "unknown-token-00000", codes.Unauthenticated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			if tc.token != "" {
				ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+tc.token))
			}
			var seen Identity
			_, err := unary(ctx, nil, &grpc.UnaryServerInfo{FullMethod: tc.method}, func(ctx context.Context, _ any) (any, error) {
				seen, _ = FromContext(ctx)
				return nil, nil
			})
			if status.Code(err) != tc.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.code)
			}
			if tc.code == codes.OK && tc.token != "" && seen.Kind == 0 {
				t.Fatal("handler saw no identity")
			}
		})
	}
}

func TestInterceptorErrorCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"unknown", fmt.Errorf("%w: the apiserver does not know it", ErrUnknown), codes.Unauthenticated, "the apiserver does not know it"},
		{"forbidden", fmt.Errorf("%w: \"carol\" may not", ErrForbidden), codes.PermissionDenied, `"carol" may not`},
		{"unavailable", fmt.Errorf("%w: dial tcp 10.0.0.1:443", ErrUnavailable), codes.Unavailable, "retry"},
		{"anything else", errors.New("boom"), codes.Unavailable, "retry"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := funcAuthenticator(func(context.Context, string) (Identity, error) { return Identity{}, tc.err })
			ctx := metadata.NewIncomingContext(t.Context(), metadata.Pairs("authorization", "Bearer some-token-000000"))
			_, err := UnaryInterceptor(a, Policy{})(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/svc.Admin/Get"},
				func(context.Context, any) (any, error) { t.Fatal("handler called"); return nil, nil })
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Fatalf("%v, want %v with %q", err, tc.code, tc.msg)
			}
			if strings.Contains(err.Error(), "10.0.0.1") {
				t.Errorf("the cause of an outage reached the caller: %v", err)
			}
		})
	}
}
