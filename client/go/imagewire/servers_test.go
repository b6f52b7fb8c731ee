package imagewire

// Tests against real servers on loopback, started by tests/test_go_client.py, which passes their addresses in the
// environment (IMAGEWIRE_GO_*). Without them the tests skip, except under CI, where they fail.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	animatev1 "imagewire.dev/client/gen/imagewire/animate/v1"
	captionv1 "imagewire.dev/client/gen/imagewire/caption/v1"
)

// env is the named variable, which the test needs.
func env(t *testing.T, name string) string {
	t.Helper()
	value := os.Getenv(name)
	if value == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set: run these tests through tests/test_go_client.py", name)
		}
		t.Skipf("needs %s: run through tests/test_go_client.py (make test)", name)
	}
	return value
}

func testImage(t *testing.T) []byte {
	image, err := os.ReadFile(env(t, "IMAGEWIRE_GO_IMAGE"))
	if err != nil {
		t.Fatal(err)
	}
	return image
}

// small is a short video of the tiny model, in several decode chunks.
func small(seed uint64) *animatev1.AnimateRequest {
	return &animatev1.AnimateRequest{Width: proto.Uint32(96), Height: proto.Uint32(64), NumFrames: proto.Uint32(5),
		NumInferenceSteps: proto.Uint32(2), DecodeChunkSize: proto.Uint32(2), Seed: proto.Uint64(seed)}
}

func animateClient(t *testing.T, target string, opts ...DialOption) *AnimateClient {
	client, err := NewAnimateClient(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

func captionClient(t *testing.T, target string, opts ...DialOption) *CaptionClient {
	client, err := NewCaptionClient(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

func checkCaption(t *testing.T, client *CaptionClient, image []byte) {
	caption, err := client.Caption(context.Background(), image,
		WithFields(&captionv1.CaptionRequest{MaxNewTokens: proto.Uint32(4)}))
	if err != nil {
		t.Fatal(err)
	}
	models, err := client.ListModels(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if caption.GetText() == "" || caption.GetModelId() != models.GetDefaultModelId() ||
		caption.GetUsage().GetInputPixels() != 120*80 {
		t.Fatalf("caption %v of the models %v", caption, models)
	}
}

func TestCaption(t *testing.T) {
	checkCaption(t, captionClient(t, env(t, "IMAGEWIRE_GO_CAPTIONER")), testImage(t))
}

// animateTo generates req's video into a file under IMAGEWIRE_GO_OUT (which the pytest side decodes), with the
// events seen.
func animateTo(t *testing.T, client *AnimateClient, name string, req *animatev1.AnimateRequest,
	onEvent func(*animatev1.AnimateResponse), opts ...CallOption) (*animatev1.AnimateResult, []byte, []string) {
	path := filepath.Join(env(t, "IMAGEWIRE_GO_OUT"), name)
	file, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	var kinds []string
	events := func(event *animatev1.AnimateResponse) {
		message := event.ProtoReflect()
		kinds = append(kinds, string(message.WhichOneof(message.Descriptor().Oneofs().ByName("event")).Name()))
		if onEvent != nil {
			onEvent(event)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	result, err := client.Animate(ctx, testImage(t), file, append(opts, WithFields(req), WithEvents(events))...)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return result, data, kinds
}

func TestAnimateToAFile(t *testing.T) {
	client := animateClient(t, env(t, "IMAGEWIRE_GO_ANIMATOR"))
	result, data, kinds := animateTo(t, client, "animate.mp4", small(3), nil)
	digest := sha256.Sum256(data)
	if int(result.GetTotalBytes()) != len(data) || !bytes.Equal(result.GetSha256(), digest[:]) ||
		result.GetSeed() != 3 {
		t.Fatalf("result %v for %d bytes", result, len(data))
	}
	if kinds[0] != "job" || kinds[len(kinds)-1] != "result" || count(kinds, "header") != 1 ||
		count(kinds, "chunk") < 3 || count(kinds, "progress") == 0 {
		t.Fatalf("events %v", kinds)
	}
	models, err := client.ListModels(context.Background())
	if err != nil || len(models.GetModels()) == 0 {
		t.Fatalf("models %v: %v", models, err)
	}
}

func TestWatchAndCancel(t *testing.T) {
	client := animateClient(t, env(t, "IMAGEWIRE_GO_ANIMATOR"))
	req := small(5)
	req.JobId = "go-watch-" + newID()
	first, data, _ := animateTo(t, client, "watched-source.mp4", req, nil)
	var copied bytes.Buffer
	watched, err := client.Watch(context.Background(), req.JobId, &copied)
	if err != nil || !bytes.Equal(copied.Bytes(), data) || !bytes.Equal(watched.GetSha256(), first.GetSha256()) {
		t.Fatalf("watched %d bytes of %d: %v", copied.Len(), len(data), err)
	}
	job, err := client.Cancel(context.Background(), req.JobId)
	if err != nil || job.GetState() != animatev1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("cancelling a finished job: %v, %v", job, err)
	}
	_, err = client.Cancel(context.Background(), "no-such-job")
	if status.Code(err) != codes.NotFound {
		t.Fatalf("cancelling an unknown job: %v", err)
	}
}

// signal tells the test's proxy to cut every connection, and returns once it is back.
func signal(t *testing.T, control, line string) {
	conn, err := net.Dial("tcp", control)
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(line + "\n")); err != nil {
		t.Error(err)
		return
	}
	if reply, err := bufio.NewReader(conn).ReadString('\n'); err != nil || reply != "ok\n" {
		t.Errorf("control %q: %q, %v", line, reply, err)
	}
}

func TestADroppedStreamResumesToTheSameBytes(t *testing.T) {
	direct := animateClient(t, env(t, "IMAGEWIRE_GO_ANIMATOR"))
	proxied := animateClient(t, env(t, "IMAGEWIRE_GO_CUT_PROXY"))
	control := env(t, "IMAGEWIRE_GO_CONTROL")
	reference, want, _ := animateTo(t, direct, "direct.mp4", small(31), nil)

	// The server holds the video's decode after the first chunk; the proxy is cut when that chunk arrives.
	signal(t, control, "hold")
	cuts := 0
	cut := func(event *animatev1.AnimateResponse) {
		if event.GetChunk() != nil && cuts == 0 {
			cuts++
			signal(t, control, "cut")
		}
	}
	fast := Resume{Attempts: 3, Backoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		ReconnectTimeout: 20 * time.Second}
	result, got, kinds := animateTo(t, proxied, "resumed.mp4", small(31), cut, WithResume(fast))
	if cuts != 1 || !bytes.Equal(got, want) || !bytes.Equal(result.GetSha256(), reference.GetSha256()) {
		t.Fatalf("after %d cuts: %d bytes, want %d", cuts, len(got), len(want))
	}
	if count(kinds, "job") != 2 { // the Animate stream's status, then the WatchAnimation stream's
		t.Fatalf("events %v", kinds)
	}
}

func TestABadFieldIsInvalidArgumentNamingIt(t *testing.T) {
	client := animateClient(t, env(t, "IMAGEWIRE_GO_ANIMATOR"))
	var out bytes.Buffer
	_, err := client.Animate(context.Background(), testImage(t), &out,
		WithFields(&animatev1.AnimateRequest{Width: proto.Uint32(63)}), WithRequestID("go-bad-width"))
	var failed *Error
	if !errors.As(err, &failed) || failed.Code != codes.InvalidArgument || failed.RequestID != "go-bad-width" ||
		!strings.HasPrefix(err.Error(), "INVALID_ARGUMENT: width") || len(failed.Violations) == 0 ||
		failed.Violations[0].Field != "width" || out.Len() != 0 {
		t.Fatalf("%#v", err)
	}
	captions := captionClient(t, env(t, "IMAGEWIRE_GO_CAPTIONER"))
	_, err = captions.Caption(context.Background(), testImage(t),
		WithFields(&captionv1.CaptionRequest{NumBeams: proto.Uint32(99)}))
	if !errors.As(err, &failed) || failed.Code != codes.InvalidArgument || failed.Violations[0].Field != "num_beams" {
		t.Fatalf("%#v", err)
	}
}

func TestAPassedDeadlineIsDeadlineExceeded(t *testing.T) {
	captions := captionClient(t, env(t, "IMAGEWIRE_GO_CAPTIONER"))
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if _, err := captions.Caption(ctx, testImage(t)); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a deadline already passed: %v", err)
	}
	// A deadline passing while the video is generated ends the download; it is not resumed.
	client := animateClient(t, env(t, "IMAGEWIRE_GO_ANIMATOR"))
	req := small(9)
	req.NumInferenceSteps = proto.Uint32(20)
	req.DetachGraceSeconds = proto.Float32(0)
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	started := time.Now()
	_, err := client.Animate(ctx, testImage(t), &bytes.Buffer{}, WithFields(req))
	if status.Code(err) != codes.DeadlineExceeded || time.Since(started) > 5*time.Second {
		t.Fatalf("a deadline passing mid-stream: %v after %v", err, time.Since(started))
	}
}

// replicas is a target resolving to every address given, as DNS would for a service with several replicas.
func replicas(addresses ...string) (string, DialOption) {
	builder := manual.NewBuilderWithScheme("imagewire-test")
	var state resolver.State
	for _, address := range addresses {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: address})
	}
	builder.InitialState(state)
	return builder.Scheme() + ":///replicas", WithGRPCOptions(grpc.WithResolvers(builder))
}

func TestACallRefusedBeforeItAnswersIsRetriedOnAnotherReplica(t *testing.T) {
	// A replica that reports SERVING and answers every call UNAVAILABLE, beside a working one.
	target, resolve := replicas(env(t, "IMAGEWIRE_GO_CAPTIONER"), env(t, "IMAGEWIRE_GO_REFUSING"))
	failures := func(opts ...DialOption) []*Error {
		client := captionClient(t, target, append(opts, resolve)...)
		var failed []*Error
		for i := 0; i < 8; i++ {
			_, err := client.Caption(context.Background(), testImage(t),
				WithFields(&captionv1.CaptionRequest{MaxNewTokens: proto.Uint32(2)}))
			var typed *Error
			if errors.As(err, &typed) {
				failed = append(failed, typed)
			} else if err != nil {
				t.Fatal(err)
			}
		}
		return failed
	}
	if failed := failures(); len(failed) != 0 {
		t.Fatalf("retried calls failed: %v", failed)
	}
	refused := failures(WithMaxAttempts(1))
	if len(refused) == 0 || refused[0].Code != codes.Unavailable || !strings.Contains(refused[0].Message,
		"still loading") {
		t.Fatalf("without retries: %v", refused)
	}
}

func TestMutualTLSAndABearerToken(t *testing.T) {
	// A captioner requiring TLS with a client certificate and "authorization: Bearer <token>".
	target, token := env(t, "IMAGEWIRE_GO_SECURE"), env(t, "IMAGEWIRE_GO_TOKEN")
	ca, err := os.ReadFile(env(t, "IMAGEWIRE_GO_CA"))
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(env(t, "IMAGEWIRE_GO_CLIENT_CERT"), env(t, "IMAGEWIRE_GO_CLIENT_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	config := &tls.Config{RootCAs: x509.NewCertPool(), Certificates: []tls.Certificate{pair},
		MinVersion: tls.VersionTLS12}
	config.RootCAs.AppendCertsFromPEM(ca)
	checkCaption(t, captionClient(t, target, WithTLS(config), WithToken(token)), testImage(t))
	_, err = captionClient(t, target, WithTLS(config), WithToken("wrong")).Caption(context.Background(),
		testImage(t))
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("a wrong token: %v", err)
	}
}

func TestThroughTheEnvoyFrontDoor(t *testing.T) {
	target := env(t, "IMAGEWIRE_GO_ENVOY")
	checkCaption(t, captionClient(t, target, WithoutHealthCheck()), testImage(t))
	result, data, _ := animateTo(t, animateClient(t, target, WithoutHealthCheck()), "envoy.mp4", small(4), nil)
	if int(result.GetTotalBytes()) != len(data) {
		t.Fatalf("result %v for %d bytes", result, len(data))
	}
}

func count(kinds []string, kind string) int {
	n := 0
	for _, k := range kinds {
		if k == kind {
			n++
		}
	}
	return n
}
