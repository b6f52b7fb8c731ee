package imagewire

import (
	"context"
	"time"

	"google.golang.org/grpc"

	captionv1 "imagewire.dev/client/gen/imagewire/caption/v1"
)

// DefaultCaptionTimeout is a Caption call's deadline when its context has none.
const DefaultCaptionTimeout = 30 * time.Second

// captionService is the service's full name, which the health checks and the retry policy name.
var captionService = string(captionv1.File_imagewire_caption_v1_caption_proto.Services().ByName("CaptionService").
	FullName())

// CaptionClient calls imagewire.caption.v1.CaptionService. It is safe for concurrent use.
type CaptionClient struct {
	conn     *grpc.ClientConn
	stub     captionv1.CaptionServiceClient
	settings dialSettings
}

// NewCaptionClient dials target (host:port, dns:///name:port, or any target grpc-go resolves) without blocking.
func NewCaptionClient(target string, opts ...DialOption) (*CaptionClient, error) {
	s, err := settings(DefaultCaptionTimeout, opts)
	if err != nil {
		return nil, err
	}
	conn, err := dial(target, captionService, s)
	if err != nil {
		return nil, err
	}
	return &CaptionClient{conn: conn, stub: captionv1.NewCaptionServiceClient(conn), settings: s}, nil
}

// Close closes the connection.
func (c *CaptionClient) Close() error { return c.conn.Close() }

// Caption captions one encoded image (PNG, JPEG, WebP, GIF, BMP or TIFF); WithFields sets the request's other
// fields (model_id, prompt, max_new_tokens...). The response carries the caption, its model and usage.
func (c *CaptionClient) Caption(ctx context.Context, image []byte,
	opts ...CallOption) (*captionv1.CaptionResponse, error) {
	call := callOptions(opts)
	req, err := request(call.fields, &captionv1.CaptionRequest{})
	if err != nil {
		return nil, err
	}
	if err := checkImage(image); err != nil {
		return nil, err
	}
	req.Image = image
	ctx, cancel := outgoing(ctx, c.settings, c.settings.timeout, call.requestID)
	defer cancel()
	resp, err := c.stub.Caption(ctx, req)
	if err != nil {
		return nil, callError(err, call.requestID, received{})
	}
	return resp, nil
}

// ListModels lists the server's loaded models with their limits and defaults.
func (c *CaptionClient) ListModels(ctx context.Context, opts ...CallOption) (*captionv1.ListModelsResponse, error) {
	call := callOptions(opts)
	ctx, cancel := outgoing(ctx, c.settings, c.settings.controlTimeout(), call.requestID)
	defer cancel()
	resp, err := c.stub.ListModels(ctx, &captionv1.ListModelsRequest{})
	if err != nil {
		return nil, callError(err, call.requestID, received{})
	}
	return resp, nil
}
