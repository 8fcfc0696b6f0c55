package grpcserver

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// logCalls logs every unary call once, here: method, status code and
// duration. Requests and metadata are never logged (they carry tokens and
// credentials). Health checks go to debug so probes do not flood the log.
func logCalls(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		level := slog.LevelInfo
		st := status.Convert(err)
		switch {
		case strings.HasPrefix(info.FullMethod, "/grpc.health."):
			level = slog.LevelDebug
		case st.Code() == codes.Internal || st.Code() == codes.Unknown:
			level = slog.LevelError
		}
		attrs := []slog.Attr{
			slog.String("method", info.FullMethod),
			slog.String("code", st.Code().String()),
			slog.Duration("duration", time.Since(start)),
		}
		if err != nil {
			attrs = append(attrs, slog.String("error", st.Message()))
		}
		log.LogAttrs(ctx, level, "grpc call", attrs...)
		return resp, err
	}
}
