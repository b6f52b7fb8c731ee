package imagewire

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	animatev1 "imagewire.dev/client/gen/imagewire/animate/v1"
	captionv1 "imagewire.dev/client/gen/imagewire/caption/v1"
)

func chunk(offset int, data string) *animatev1.AnimateResponse {
	return &animatev1.AnimateResponse{Event: &animatev1.AnimateResponse_Chunk{
		Chunk: &animatev1.VideoChunk{Offset: uint64(offset), Data: []byte(data)}}}
}

func result(data string) *animatev1.AnimateResponse {
	sum := sha256.Sum256([]byte(data))
	return &animatev1.AnimateResponse{Event: &animatev1.AnimateResponse_Result{
		Result: &animatev1.AnimateResult{TotalBytes: uint64(len(data)), Sha256: sum[:]}}}
}

func TestSinkWritesChunksInOrderAndChecksTheResult(t *testing.T) {
	var out bytes.Buffer
	seen := 0
	sink := newVideoSink(&out, func(*animatev1.AnimateResponse) { seen++ })
	for _, event := range []*animatev1.AnimateResponse{chunk(0, "abc"), chunk(3, "de"), result("abcde")} {
		if err := sink.feed(event); err != nil {
			t.Fatal(err)
		}
	}
	got, err := sink.finish()
	if err != nil || got.GetTotalBytes() != 5 || out.String() != "abcde" || seen != 3 {
		t.Fatalf("result %v, err %v, written %q, events seen %d", got, err, out.String(), seen)
	}
}

func TestSinkRefusesAGapAndAMismatchedDigestAsDataLoss(t *testing.T) {
	sink := newVideoSink(&bytes.Buffer{}, nil)
	if err := sink.feed(chunk(1, "x")); status.Code(err) != codes.DataLoss || !strings.Contains(err.Error(),
		"chunk at offset 1, expected 0") {
		t.Fatalf("a chunk past the bytes written: %v", err)
	}
	sink = newVideoSink(&bytes.Buffer{}, nil)
	_ = sink.feed(chunk(0, "abc"))
	if err := sink.feed(result("abd")); status.Code(err) != codes.DataLoss {
		t.Fatalf("a digest of other bytes: %v", err)
	}
	if _, err := newVideoSink(&bytes.Buffer{}, nil).finish(); status.Code(err) != codes.DataLoss {
		t.Fatalf("a stream without a result: %v", err)
	}
}

func TestSinkRestartsAFileABufferOrARestarterButNoPlainWriter(t *testing.T) {
	file, err := os.Create(filepath.Join(t.TempDir(), "video.mp4"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	var buffer bytes.Buffer
	for _, w := range []interface{ Write([]byte) (int, error) }{file, &buffer} {
		sink := newVideoSink(w, nil)
		_ = sink.feed(chunk(0, "old bytes"))
		if err := sink.restart(); err != nil {
			t.Fatal(err)
		}
		for _, event := range []*animatev1.AnimateResponse{chunk(0, "new"), result("new")} {
			if err := sink.feed(event); err != nil {
				t.Fatalf("%T after restart: %v", w, err)
			}
		}
	}
	data, _ := os.ReadFile(file.Name())
	if string(data) != "new" || buffer.String() != "new" {
		t.Fatalf("after restart the file has %q, the buffer %q", data, buffer.String())
	}
	sink := newVideoSink(plainWriter{}, nil)
	if err := sink.restart(); err == nil || !strings.Contains(err.Error(), "cannot start over") {
		t.Fatalf("a plain writer restarted: %v", err)
	}
}

type plainWriter struct{}

func (plainWriter) Write(p []byte) (int, error) { return len(p), nil }

func TestResumePausesGrowToTheirBound(t *testing.T) {
	var pauses []time.Duration
	for i := 0; i < 6; i++ {
		pauses = append(pauses, DefaultResume.pause(i))
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		8 * time.Second}
	if !reflect.DeepEqual(pauses, want) {
		t.Fatalf("pauses %v, want %v", pauses, want)
	}
	if (Resume{}).check() != nil || (Resume{Attempts: -1}).check() == nil || (Resume{Attempts: 1}).check() == nil {
		t.Fatal("Resume{} never resumes; negative attempts and zero pauses are refused")
	}
}

func TestDroppedStreamsAreUnavailableOrResetByAProxy(t *testing.T) {
	cases := map[*Error]bool{
		{Code: codes.Unavailable, Message: "connection reset"}:                                     true,
		{Code: codes.Internal, Message: "Received RST_STREAM with error code 2"}:                   true,
		{Code: codes.Internal, Message: "Stream removed"}:                                          true,
		{Code: codes.Internal, Message: "the server failed"}:                                       false,
		{Code: codes.NotFound, Message: "no job"}:                                                  false,
		{Code: codes.DeadlineExceeded, Message: "stream terminated by RST_STREAM with error code"}: false,
	}
	for err, want := range cases {
		if dropped(err) != want {
			t.Errorf("dropped(%v) = %v", err, !want)
		}
	}
}

func TestErrorsCarryTheStatusAndTheFieldViolations(t *testing.T) {
	st, err := status.New(codes.InvalidArgument, "width: must be a multiple of 8").WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "width", Description: "must be a multiple of 8"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	failed := callError(st.Err(), "req-1", received{responses: 2, bytes: 10})
	var typed *Error
	if !errors.As(failed, &typed) || typed.RequestID != "req-1" || status.Code(failed) != codes.InvalidArgument {
		t.Fatalf("%#v", failed)
	}
	if !reflect.DeepEqual(typed.Violations, []FieldViolation{{"width", "must be a multiple of 8"}}) {
		t.Fatalf("violations %v", typed.Violations)
	}
	if want := "INVALID_ARGUMENT: width: must be a multiple of 8 (after 2 responses and 10 video bytes had " +
		"arrived)"; failed.Error() != want {
		t.Fatalf("%q", failed.Error())
	}
	plain := errors.New("disk full")
	if callError(plain, "", received{}) != plain {
		t.Fatal("an error that is no status is returned as it is")
	}
	for code, name := range map[codes.Code]string{codes.OK: "OK", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
		codes.Unavailable: "UNAVAILABLE", codes.ResourceExhausted: "RESOURCE_EXHAUSTED"} {
		if CodeName(code) != name {
			t.Errorf("CodeName(%v) = %s", code, CodeName(code))
		}
	}
}

func TestServiceConfigIsThePythonClients(t *testing.T) {
	config, err := ServiceConfig("imagewire.caption.v1.CaptionService", 5, true)
	if err != nil {
		t.Fatal(err)
	}
	var got, want any
	_ = json.Unmarshal([]byte(config), &got)
	// client/imagewire/client/_channel.py's service_config("imagewire.caption.v1.CaptionService").
	_ = json.Unmarshal([]byte(`{"loadBalancingConfig": [{"round_robin": {}}],
		"healthCheckConfig": {"serviceName": "imagewire.caption.v1.CaptionService"},
		"methodConfig": [{"name": [{"service": "imagewire.caption.v1.CaptionService"}],
			"retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2,
				"retryableStatusCodes": ["UNAVAILABLE"]}}],
		"retryThrottling": {"maxTokens": 1000, "tokenRatio": 0.1}}`), &want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("service config %s", config)
	}
	config, _ = ServiceConfig("s", 1, false)
	if config != `{"loadBalancingConfig":[{"round_robin":{}}]}` {
		t.Fatalf("no retries, no health checks: %s", config)
	}
	if _, err := ServiceConfig("s", 6, true); err == nil {
		t.Fatal("6 attempts accepted")
	}
}

func TestRequestFieldsAreMergedAndCheckedForTheirType(t *testing.T) {
	req, err := request(&animatev1.AnimateRequest{NumFrames: proto.Uint32(5), JobId: "j"}, &animatev1.AnimateRequest{})
	if err != nil || req.GetNumFrames() != 5 || req.GetJobId() != "j" || req.Width != nil {
		t.Fatalf("%v %v", req, err)
	}
	if _, err := request(&captionv1.CaptionRequest{}, &animatev1.AnimateRequest{}); err == nil {
		t.Fatal("a CaptionRequest's fields given to Animate")
	}
	if err := checkImage(make([]byte, MaxImageBytes+1)); status.Code(err) != codes.InvalidArgument ||
		err.(*Error).Violations[0].Field != "image" {
		t.Fatalf("an image over 50 MiB: %v", err)
	}
}

func TestWatchEventsReadAsAnimateEvents(t *testing.T) {
	watched := &animatev1.WatchAnimationResponse{Event: &animatev1.WatchAnimationResponse_Chunk{
		Chunk: &animatev1.VideoChunk{Offset: 7, Data: []byte("xy")}}}
	event, err := asAnimateResponse(watched)
	if err != nil || event.GetChunk().GetOffset() != 7 || string(event.GetChunk().GetData()) != "xy" {
		t.Fatalf("%v %v", event, err)
	}
}

func TestGrpcGoAppliesTheRetryPolicyFrom140OrWhenTurnedOn(t *testing.T) {
	cases := []struct {
		version, setting string
		want             bool
	}{{"1.33.3", "", false}, {"1.33.3", "on", true}, {"1.39.0", "ON", true}, {"1.40.0", "", true},
		{"1.62.1", "off", false}, {"1.62.1", "", true}}
	for _, c := range cases {
		if got := serviceConfigRetries(c.version, c.setting); got != c.want {
			t.Errorf("grpc-go %s with GRPC_GO_RETRY=%q: %v", c.version, c.setting, got)
		}
	}
}
