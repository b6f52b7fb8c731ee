// Package imagewire is the Go client of the imagewire services: a thin layer over the stubs generated from
// protos/ (imagewire.dev/client/gen/...), following the rules every imagewire client follows (docs/api.md).
//
// A CaptionClient captions images; an AnimateClient turns an image into a short video that it writes to an
// io.Writer while it streams, resuming a dropped stream from its byte offset with WatchAnimation under the same
// job id and checking the length and SHA-256 at the end.
//
// Both clients dial with the service config of the Python client: round_robin over every address the target
// resolves to, health checking of each address (WithoutHealthCheck for a proxy such as the Envoy front door), and
// retries on UNAVAILABLE of calls refused before they answered (WithMaxAttempts). grpc-go releases before 1.40,
// such as Debian bookworm's 1.33, apply a service config's retry policy only when the process starts with
// GRPC_GO_RETRY=on in its environment; without it the client retries its unary calls itself under the same policy,
// and an Animate download refused before its first event is resumed like a dropped one.
//
// Deadlines come from the context; a context without one gets the client's default (WithTimeout). A failed call
// returns an *Error carrying the gRPC status, the request id and any google.rpc.BadRequest field violations; it
// also works with status.Code and status.FromError.
package imagewire
