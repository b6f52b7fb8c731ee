package imagewire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	animatev1 "imagewire.dev/client/gen/imagewire/animate/v1"
)

// download is the calls of one job's video into a sink: Animate (or WatchAnimation), then WatchAnimation from the
// bytes written after each drop, or Animate again under the same job id when the server lost the job; all under
// one request id and deadline.
type download struct {
	client    *AnimateClient
	jobID     string
	requestID string
	// request is the Animate request, nil for a download that began with WatchAnimation (it cannot restart).
	request *animatev1.AnimateRequest
	resume  Resume
	sink    *videoSink
}

type method int

const (
	animateCall method = iota
	watchCall
)

func (d *download) run(ctx context.Context) (*animatev1.AnimateResult, error) {
	ctx, cancel := outgoing(ctx, d.client.settings, d.client.settings.timeout, d.requestID, JobIDKey, d.jobID)
	defer cancel()
	next := watchCall
	if d.request != nil {
		next = animateCall
	}
	for resumes := 0; ; resumes++ {
		err := d.attempt(ctx, next, resumes > 0)
		if err == nil {
			return d.sink.finish()
		}
		var failed *Error
		if !errors.As(err, &failed) {
			return nil, err
		}
		lostJob := failed.Code == codes.NotFound && next == watchCall && resumes > 0 && d.request != nil
		if !dropped(failed) && !lostJob || resumes >= d.resume.Attempts {
			return nil, err
		}
		pause := d.resume.pause(resumes)
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= pause {
			return nil, err
		}
		if lostJob {
			if restartErr := d.sink.restart(); restartErr != nil {
				return nil, fmt.Errorf("%w; %v", err, restartErr)
			}
		}
		next = watchCall
		if lostJob {
			next = animateCall
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return nil, callError(status.FromContextError(ctx.Err()).Err(), d.requestID, received{})
		}
	}
}

// attempt is one call, read to its end into the sink. A reconnecting call waits for the connection to come back,
// at most the resume's ReconnectTimeout until its first response.
func (d *download) attempt(ctx context.Context, m method, reconnecting bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var opts []grpc.CallOption
	var timer *time.Timer
	var timedOut atomic.Bool
	if reconnecting {
		opts = append(opts, grpc.WaitForReady(true))
		timer = time.AfterFunc(d.resume.ReconnectTimeout, func() {
			timedOut.Store(true)
			cancel()
		})
		defer timer.Stop()
	}
	recv, err := d.open(ctx, m, opts)
	var got received
	for err == nil {
		var event *animatev1.AnimateResponse
		if event, err = recv(); err != nil {
			break
		}
		if timer != nil && got.responses == 0 && !timer.Stop() {
			break // the reconnect timeout fired as the first response arrived: the call is cancelled
		}
		got.responses++
		got.bytes += int64(len(event.GetChunk().GetData()))
		if err = d.sink.feed(event); err != nil {
			return err
		}
	}
	if timedOut.Load() && got.responses == 0 {
		return &Error{Code: codes.Unavailable, RequestID: d.requestID,
			Message: fmt.Sprintf("the connection did not come back within %v", d.resume.ReconnectTimeout)}
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return callError(err, d.requestID, got)
}

// open starts the call; its events come from the returned function, io.EOF once the stream has ended.
func (d *download) open(ctx context.Context, m method, opts []grpc.CallOption) (func() (*animatev1.AnimateResponse,
	error), error) {
	if m == animateCall {
		stream, err := d.client.stub.Animate(ctx, d.request, opts...)
		if err != nil {
			return nil, err
		}
		return stream.Recv, nil
	}
	req := &animatev1.WatchAnimationRequest{JobId: d.jobID, Offset: uint64(d.sink.written)}
	stream, err := d.client.stub.WatchAnimation(ctx, req, opts...)
	if err != nil {
		return nil, err
	}
	return func() (*animatev1.AnimateResponse, error) {
		watched, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		return asAnimateResponse(watched)
	}, nil
}

// asAnimateResponse reads a WatchAnimation event as the Animate event it is: the two messages carry the same events
// under the same field numbers, so their encodings are interchangeable.
func asAnimateResponse(watched *animatev1.WatchAnimationResponse) (*animatev1.AnimateResponse, error) {
	encoded, err := proto.Marshal(watched)
	if err != nil {
		return nil, err
	}
	event := &animatev1.AnimateResponse{}
	return event, proto.Unmarshal(encoded, event)
}
