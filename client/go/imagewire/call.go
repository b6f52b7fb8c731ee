package imagewire

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	animatev1 "imagewire.dev/client/gen/imagewire/animate/v1"
)

const (
	requestIDKey = "x-request-id"
	// JobIDKey is the metadata key carrying a job's id on every call about it, on which a front door with several
	// replicas routes the call to the replica holding the job.
	JobIDKey = "x-imagewire-job-id"
)

// CallOption configures one call.
type CallOption func(*callSettings)

type callSettings struct {
	requestID string
	fields    proto.Message
	onEvent   func(*animatev1.AnimateResponse)
	resume    Resume
}

// WithRequestID sends id as the call's x-request-id (by default a new random one); errors carry it.
func WithRequestID(id string) CallOption { return func(c *callSettings) { c.requestID = id } }

// WithFields sets the request's other fields, those set in fields (a *captionv1.CaptionRequest for Caption, an
// *animatev1.AnimateRequest for Animate); an optional field left unset takes the model's default. Its image is
// ignored: the call's image argument is sent.
func WithFields(fields proto.Message) CallOption { return func(c *callSettings) { c.fields = fields } }

// WithEvents has fn see every event of an Animate or Watch download as it arrives (progress, previews, the header,
// chunks, the result; a resumed stream's events too), before the writer gets the chunk.
func WithEvents(fn func(*animatev1.AnimateResponse)) CallOption {
	return func(c *callSettings) { c.onEvent = fn }
}

// WithResume replaces DefaultResume for one download.
func WithResume(r Resume) CallOption { return func(c *callSettings) { c.resume = r } }

func callOptions(opts []CallOption) callSettings {
	c := callSettings{resume: DefaultResume}
	for _, opt := range opts {
		opt(&c)
	}
	if c.requestID == "" {
		c.requestID = newID()
	}
	return c
}

// newID is 32 random hexadecimal digits: a request id, or a job id the client picks.
func newID() string {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		panic(fmt.Sprintf("imagewire: no randomness for an id: %v", err))
	}
	return hex.EncodeToString(id[:])
}

// outgoing is ctx with the call's metadata (request id, bearer token, then pairs) and, when ctx has no deadline,
// the default one; cancel releases it.
func outgoing(ctx context.Context, s dialSettings, timeout time.Duration, requestID string,
	pairs ...string) (context.Context, context.CancelFunc) {
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	kv := []string{requestIDKey, requestID}
	if s.token != "" {
		kv = append(kv, "authorization", "Bearer "+s.token)
	}
	return metadata.AppendToOutgoingContext(ctx, append(kv, pairs...)...), cancel
}

// request copies the caller's fields (of type T) into a new request message.
func request[T proto.Message](fields proto.Message, fresh T) (T, error) {
	if fields == nil {
		return fresh, nil
	}
	if fields.ProtoReflect().Descriptor() != fresh.ProtoReflect().Descriptor() {
		return fresh, fmt.Errorf("imagewire: WithFields got a %s where the call takes a %s",
			fields.ProtoReflect().Descriptor().FullName(), fresh.ProtoReflect().Descriptor().FullName())
	}
	proto.Merge(fresh, fields)
	return fresh, nil
}

func checkImage(image []byte) error {
	if len(image) > MaxImageBytes {
		return invalidArgument("image", fmt.Sprintf("is %d bytes, over the limit of %d (50 MiB)", len(image),
			MaxImageBytes))
	}
	return nil
}
