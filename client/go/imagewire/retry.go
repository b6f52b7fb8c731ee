package imagewire

import (
	"context"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The retry policy's backoff (ServiceConfig), which the fallback below follows too.
const (
	retryInitialBackoff = 100 * time.Millisecond
	retryMaxBackoff     = time.Second
)

// serviceConfigRetries says whether grpc-go applies a service config's retry policy: from release 1.40 on it does
// unless GRPC_GO_RETRY=off; before, only with GRPC_GO_RETRY=on, read once as the process starts.
func serviceConfigRetries(version, setting string) bool {
	parts := strings.SplitN(version, ".", 3)
	minor := 0
	if len(parts) >= 2 {
		minor, _ = strconv.Atoi(parts[1])
	}
	if parts[0] == "1" && minor < 40 {
		return strings.EqualFold(setting, "on")
	}
	return !strings.EqualFold(setting, "off")
}

// retryRefused is the retry policy for unary calls where grpc-go ignores it (see serviceConfigRetries): a call that
// failed UNAVAILABLE is sent again, up to maxAttempts in all, after a random pause below a backoff that doubles from
// 0.1 s to 1 s, as gRPC's own retries do. A unary call that failed UNAVAILABLE had no answer, and every unary
// imagewire RPC is safe to repeat (the protos say so). Streams are left to the download's resuming.
func retryRefused(maxAttempts int) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply interface{}, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		backoff := retryInitialBackoff
		for attempt := 1; ; attempt++ {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if status.Code(err) != codes.Unavailable || attempt >= maxAttempts {
				return err
			}
			select {
			case <-time.After(time.Duration(rand.Int63n(int64(backoff)))):
			case <-ctx.Done():
				return err
			}
			if backoff *= 2; backoff > retryMaxBackoff {
				backoff = retryMaxBackoff
			}
		}
	}
}

// fallbackRetries is the dial option that retries unary calls where grpc-go would not; none where it will.
func fallbackRetries(maxAttempts int) []grpc.DialOption {
	if maxAttempts == 1 || serviceConfigRetries(grpc.Version, os.Getenv("GRPC_GO_RETRY")) {
		return nil
	}
	return []grpc.DialOption{grpc.WithUnaryInterceptor(retryRefused(maxAttempts))}
}
