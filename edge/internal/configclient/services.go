package configclient

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// DialServices opens a second connection to the control plane for its
// other services (the storage broker), with the same transport security
// and dial options as the configuration stream. Every call carries the
// same "authorization: Bearer …" header as the stream, from the token file
// read again for each call, so a rotated projected token is used at once.
// The caller closes the connection.
func (c *Client) DialServices() (*grpc.ClientConn, error) {
	return c.dial(
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			ctx, err := c.withToken(ctx)
			if err != nil {
				return err
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			ctx, err := c.withToken(ctx)
			if err != nil {
				return nil, err
			}
			return streamer(ctx, desc, cc, method, opts...)
		}),
	)
}

// withToken adds the bearer token to ctx, as session does for the stream.
func (c *Client) withToken(ctx context.Context) (context.Context, error) {
	if c.o.tokenFile == "" {
		return ctx, nil
	}
	token, err := readToken(c.o.tokenFile)
	if err != nil {
		return nil, fmt.Errorf("control plane call: %w", err)
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), nil
}
