package imagewire

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"

	animatev1 "imagewire.dev/client/gen/imagewire/animate/v1"
)

const (
	// DefaultAnimateTimeout is a download's deadline (all its calls together) when its context has none:
	// generation takes minutes on a real model.
	DefaultAnimateTimeout = 900 * time.Second
	// cancelTimeout bounds the CancelAnimation sent for a caller who left: it must not keep them long.
	cancelTimeout = 10 * time.Second
)

// animateService is the service's full name, which the health checks and the retry policy name.
var animateService = string(animatev1.File_imagewire_animate_v1_animate_proto.Services().ByName("AnimateService").
	FullName())

// AnimateClient calls imagewire.animate.v1.AnimateService. It is safe for concurrent use.
type AnimateClient struct {
	conn     *grpc.ClientConn
	stub     animatev1.AnimateServiceClient
	settings dialSettings
}

// NewAnimateClient dials target (host:port, dns:///name:port, or any target grpc-go resolves) without blocking.
func NewAnimateClient(target string, opts ...DialOption) (*AnimateClient, error) {
	s, err := settings(DefaultAnimateTimeout, opts)
	if err != nil {
		return nil, err
	}
	conn, err := dial(target, animateService, s)
	if err != nil {
		return nil, err
	}
	return &AnimateClient{conn: conn, stub: animatev1.NewAnimateServiceClient(conn), settings: s}, nil
}

// Close closes the connection.
func (c *AnimateClient) Close() error { return c.conn.Close() }

// Animate generates a video from one encoded image and writes it to w while it streams; it returns the result once
// the video's length and SHA-256 match what was written. WithFields sets the request's other fields (a
// *animatev1.AnimateRequest: num_frames, seed, format...), WithEvents sees the progress, previews and every other
// event, WithResume changes how dropped connections are survived.
//
// The job gets a new id unless WithFields names one. A stream dropped by the connection (UNAVAILABLE, or reset by
// a proxy) is resumed with WatchAnimation from the bytes already written; if the server no longer knows the job
// (it restarted, or the call reached another replica), the request is sent again under the same job id and w
// starts over (see Restarter). All of it happens within ctx's deadline. Cancelling ctx cancels the job on the
// server; a deadline or a failed call leaves it to the server's detach grace.
func (c *AnimateClient) Animate(ctx context.Context, image []byte, w io.Writer,
	opts ...CallOption) (*animatev1.AnimateResult, error) {
	call := callOptions(opts)
	req, err := request(call.fields, &animatev1.AnimateRequest{})
	if err != nil {
		return nil, err
	}
	if err := checkImage(image); err != nil {
		return nil, err
	}
	if err := call.resume.check(); err != nil {
		return nil, err
	}
	req.Image = image
	if req.JobId == "" {
		req.JobId = newID()
	}
	d := &download{client: c, jobID: req.JobId, requestID: call.requestID, request: req, resume: call.resume,
		sink: newVideoSink(w, call.onEvent)}
	result, err := d.run(ctx)
	if err != nil && errors.Is(ctx.Err(), context.Canceled) {
		// The caller left: the job this call started has no one to deliver to.
		cancelCtx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
		defer cancel()
		_, _ = c.Cancel(cancelCtx, req.JobId)
	}
	return result, err
}

// Watch writes job jobID's video to w from its first byte (the job started by any caller, while the server
// retains it), resuming after dropped connections like Animate; it returns the verified result. Cancelling ctx
// only stops watching.
func (c *AnimateClient) Watch(ctx context.Context, jobID string, w io.Writer,
	opts ...CallOption) (*animatev1.AnimateResult, error) {
	call := callOptions(opts)
	if err := call.resume.check(); err != nil {
		return nil, err
	}
	d := &download{client: c, jobID: jobID, requestID: call.requestID, resume: call.resume,
		sink: newVideoSink(w, call.onEvent)}
	return d.run(ctx)
}

// Cancel stops job jobID at its next step and returns its status once it has stopped (or the state it had already
// ended in).
func (c *AnimateClient) Cancel(ctx context.Context, jobID string, opts ...CallOption) (*animatev1.JobStatus, error) {
	call := callOptions(opts)
	ctx, cancel := outgoing(ctx, c.settings, c.settings.controlTimeout(), call.requestID, JobIDKey, jobID)
	defer cancel()
	resp, err := c.stub.CancelAnimation(ctx, &animatev1.CancelAnimationRequest{JobId: jobID})
	if err != nil {
		return nil, callError(err, call.requestID, received{})
	}
	return resp.GetJob(), nil
}

// ListModels lists the server's loaded models with their limits, defaults and the request fields each takes.
func (c *AnimateClient) ListModels(ctx context.Context, opts ...CallOption) (*animatev1.ListModelsResponse, error) {
	call := callOptions(opts)
	ctx, cancel := outgoing(ctx, c.settings, c.settings.controlTimeout(), call.requestID)
	defer cancel()
	resp, err := c.stub.ListModels(ctx, &animatev1.ListModelsRequest{})
	if err != nil {
		return nil, callError(err, call.requestID, received{})
	}
	return resp, nil
}
