package imagewire

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	// Registers round_robin, which the service config names.
	_ "google.golang.org/grpc/balancer/roundrobin"
	"google.golang.org/grpc/credentials"
	// Registers the client side of health checking, which the service config's healthCheckConfig turns on.
	_ "google.golang.org/grpc/health"
	"google.golang.org/grpc/keepalive"
)

const (
	// MaxImageBytes is the contract's bound on an encoded image (50 MiB); a larger one is refused before sending.
	MaxImageBytes = 50 * 1024 * 1024
	// maxSendBytes is the largest image plus the rest of the request message.
	maxSendBytes = MaxImageBytes + 64*1024
	// Video chunks are at most 1 MiB and other responses small: anything far larger is a misbehaving server.
	maxReceiveBytes = 8 * 1024 * 1024
	// MaxAttempts is gRPC's ceiling on a retry policy's attempts.
	MaxAttempts = 5
	// controlTimeout bounds the default deadline of the calls that answer at once (ListModels, CancelAnimation).
	controlTimeout = 30 * time.Second
)

// DialOption configures a client's connection and defaults.
type DialOption func(*dialSettings)

type dialSettings struct {
	tls         *tls.Config
	token       string
	maxAttempts int
	healthCheck bool
	timeout     time.Duration
	grpcOptions []grpc.DialOption
}

// WithTLS dials with TLS (cfg may carry client certificates for mutual TLS, and ServerName); without it the
// connection is plaintext, as the servers listen by default.
func WithTLS(cfg *tls.Config) DialOption { return func(s *dialSettings) { s.tls = cfg } }

// WithToken sends "authorization: Bearer <token>" with every call, for servers started with an auth token.
func WithToken(token string) DialOption { return func(s *dialSettings) { s.token = token } }

// WithMaxAttempts bounds each call's attempts, retries included, from 1 (no retries) to MaxAttempts (the default).
func WithMaxAttempts(n int) DialOption { return func(s *dialSettings) { s.maxAttempts = n } }

// WithoutHealthCheck stops the client's own health checks of the target's addresses: for a target that is a proxy
// checking the replicas itself (the Envoy front door), which answers no health checks of its own.
func WithoutHealthCheck() DialOption { return func(s *dialSettings) { s.healthCheck = false } }

// WithTimeout sets the deadline of a call whose context has none (the default: 30 s for Caption, 900 s for an
// Animate download); ListModels and CancelAnimation get the shorter of it and 30 s.
func WithTimeout(d time.Duration) DialOption { return func(s *dialSettings) { s.timeout = d } }

// WithGRPCOptions adds grpc-go dial options after the client's own.
func WithGRPCOptions(opts ...grpc.DialOption) DialOption {
	return func(s *dialSettings) { s.grpcOptions = append(s.grpcOptions, opts...) }
}

func settings(defaultTimeout time.Duration, opts []DialOption) (dialSettings, error) {
	s := dialSettings{maxAttempts: MaxAttempts, healthCheck: true, timeout: defaultTimeout}
	for _, opt := range opts {
		opt(&s)
	}
	if s.maxAttempts < 1 || s.maxAttempts > MaxAttempts {
		return s, fmt.Errorf("imagewire: max attempts must be from 1 (no retries) to %d, not %d", MaxAttempts,
			s.maxAttempts)
	}
	if s.timeout <= 0 {
		return s, fmt.Errorf("imagewire: the default timeout must be positive, not %v", s.timeout)
	}
	return s, nil
}

func (s dialSettings) controlTimeout() time.Duration {
	if s.timeout < controlTimeout {
		return s.timeout
	}
	return controlTimeout
}

// ServiceConfig is the gRPC service config (JSON) of a connection to service (its full name, such as
// "imagewire.caption.v1.CaptionService"), the same as the Python client's: round_robin; health checking of each
// address for service unless healthCheck is false; unless maxAttempts is 1, a retry policy on UNAVAILABLE for every
// method of the service with exponential backoff (gRPC retries an attempt only until its first response arrives),
// and retry throttling so that retries stop adding load when the whole fleet is down.
func ServiceConfig(service string, maxAttempts int, healthCheck bool) (string, error) {
	if maxAttempts < 1 || maxAttempts > MaxAttempts {
		return "", fmt.Errorf("imagewire: max attempts must be from 1 (no retries) to %d, not %d", MaxAttempts,
			maxAttempts)
	}
	config := map[string]any{"loadBalancingConfig": []any{map[string]any{"round_robin": map[string]any{}}}}
	if healthCheck {
		config["healthCheckConfig"] = map[string]any{"serviceName": service}
	}
	if maxAttempts > 1 {
		config["methodConfig"] = []any{map[string]any{
			"name": []any{map[string]any{"service": service}},
			"retryPolicy": map[string]any{
				"maxAttempts":          maxAttempts,
				"initialBackoff":       "0.1s",
				"maxBackoff":           "1s",
				"backoffMultiplier":    2,
				"retryableStatusCodes": []string{"UNAVAILABLE"},
			},
		}}
		config["retryThrottling"] = map[string]any{"maxTokens": 1000, "tokenRatio": 0.1}
	}
	encoded, err := json.Marshal(config)
	return string(encoded), err
}

func dial(target, service string, s dialSettings) (*grpc.ClientConn, error) {
	config, err := ServiceConfig(service, s.maxAttempts, s.healthCheck)
	if err != nil {
		return nil, err
	}
	transport := grpc.WithInsecure()
	if s.tls != nil {
		transport = grpc.WithTransportCredentials(credentials.NewTLS(s.tls))
	}
	opts := []grpc.DialOption{
		transport,
		grpc.WithDefaultServiceConfig(config),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallSendMsgSize(maxSendBytes),
			grpc.MaxCallRecvMsgSize(maxReceiveBytes),
			// A retried attempt resends the request, which gRPC keeps for that only up to this size.
			grpc.MaxRetryRPCBufferSize(maxSendBytes),
		),
		// Long animate streams sit idle between chunks; keepalive notices a dead peer.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// A replica restarted on the same address is found again within seconds, not gRPC's default 2 minutes.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second,
		}, MinConnectTimeout: 20 * time.Second}),
	}
	if s.maxAttempts == 1 {
		opts = append(opts, grpc.WithDisableRetry())
	}
	opts = append(opts, fallbackRetries(s.maxAttempts)...)
	return grpc.Dial(target, append(opts, s.grpcOptions...)...)
}
