package auth

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Rule is what calling a service requires.
type Rule int

// Rules of a Policy.
const (
	// Public services need no token: only the health service, so that
	// probes and load balancers work without one.
	Public Rule = iota + 1
	// RequireAdmin: an admin token.
	RequireAdmin
	// RequireEdge: an edge token.
	RequireEdge
	// RequireAuthenticated: any valid token, admin or edge (server
	// reflection: the schema is no secret, but answering it costs the
	// server work an anonymous caller should not be able to ask for).
	RequireAuthenticated
)

// Policy maps fully qualified service names ("selfhost.v1.AdminService")
// to Rules. A service that is not listed requires an admin token: a
// service registered later is closed until someone opens it.
type Policy map[string]Rule

func (p Policy) rule(fullMethod string) Rule {
	service, _, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if r, ok := p[service]; ok {
		return r
	}
	return RequireAdmin
}

// UnaryInterceptor authenticates unary calls according to p.
func UnaryInterceptor(a Authenticator, p Policy) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := authorize(ctx, a, p.rule(info.FullMethod))
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor authenticates streams according to p, before the
// handler reads the first message.
func StreamInterceptor(a Authenticator, p Policy) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := authorize(ss.Context(), a, p.rule(info.FullMethod))
		if err != nil {
			return err
		}
		return handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
	}
}

type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }

// authorize is the server boundary of this package: it returns gRPC
// status errors whose messages say what is wrong, never the token.
func authorize(ctx context.Context, a Authenticator, rule Rule) (context.Context, error) {
	if rule == Public {
		return ctx, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	token, err := ParseBearer(md.Get("authorization"))
	switch {
	case errors.Is(err, ErrMissing):
		return nil, status.Error(codes.Unauthenticated, `missing bearer token: send metadata "authorization: Bearer <token>"`)
	case err != nil:
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	id, err := a.Authenticate(ctx, token)
	switch {
	case errors.Is(err, ErrForbidden):
		// Authenticators word these for the caller, without the token.
		return nil, status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrUnknown):
		return nil, status.Error(codes.Unauthenticated, err.Error())
	case err != nil:
		// The cause (an apiserver address, say) is the server's to log.
		return nil, status.Error(codes.Unavailable, "authentication is unavailable; retry")
	}
	switch {
	case rule == RequireAdmin && id.Kind != KindAdmin:
		return nil, status.Errorf(codes.PermissionDenied, "an %s token cannot call the admin API", id.Kind)
	case rule == RequireEdge && id.Kind != KindEdge:
		return nil, status.Errorf(codes.PermissionDenied, "an %s token cannot open an edge config stream", id.Kind)
	}
	return WithIdentity(ctx, id), nil
}
