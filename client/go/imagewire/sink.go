package imagewire

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"

	"google.golang.org/grpc/codes"

	animatev1 "imagewire.dev/client/gen/imagewire/animate/v1"
)

// Restarter is a writer that can empty itself, for a download that must start its video over: when the server
// lost the job (NOT_FOUND on resuming), Animate sends the request again under the same job id and writes the video
// from its first byte. An *os.File (any writer with Seek and Truncate) and a *bytes.Buffer (Reset) start over
// without it; other writers end such a download with the NOT_FOUND error.
type Restarter interface {
	Restart() error
}

type truncater interface {
	io.Seeker
	Truncate(size int64) error
}

// videoSink writes a stream's chunks to w in order, across resumed streams, and checks the result's length and
// SHA-256 against what it wrote.
type videoSink struct {
	w       io.Writer
	onEvent func(*animatev1.AnimateResponse)
	digest  hash.Hash
	written int64
	result  *animatev1.AnimateResult
}

func newVideoSink(w io.Writer, onEvent func(*animatev1.AnimateResponse)) *videoSink {
	return &videoSink{w: w, onEvent: onEvent, digest: sha256.New()}
}

// feed consumes one event.
func (s *videoSink) feed(event *animatev1.AnimateResponse) error {
	if s.onEvent != nil {
		s.onEvent(event)
	}
	switch e := event.GetEvent().(type) {
	case *animatev1.AnimateResponse_Chunk:
		if offset := int64(e.Chunk.GetOffset()); offset != s.written {
			return &Error{Code: codes.DataLoss, Message: fmt.Sprintf("chunk at offset %d, expected %d", offset,
				s.written)}
		}
		if _, err := s.w.Write(e.Chunk.GetData()); err != nil {
			return fmt.Errorf("imagewire: writing the video: %w", err)
		}
		s.digest.Write(e.Chunk.GetData())
		s.written += int64(len(e.Chunk.GetData()))
	case *animatev1.AnimateResponse_Result:
		result := e.Result
		if int64(result.GetTotalBytes()) != s.written || !bytes.Equal(result.GetSha256(), s.digest.Sum(nil)) {
			return &Error{Code: codes.DataLoss, Message: fmt.Sprintf(
				"received %d bytes that do not match the result (%d bytes, sha256 %x)", s.written,
				result.GetTotalBytes(), result.GetSha256())}
		}
		s.result = result
	}
	return nil
}

// restart empties the writer: the video will be streamed again from its first byte.
func (s *videoSink) restart() error {
	var err error
	switch w := s.w.(type) {
	case Restarter:
		err = w.Restart()
	case truncater:
		if err = w.Truncate(0); err == nil {
			_, err = w.Seek(0, io.SeekStart)
		}
	case interface{ Reset() }:
		w.Reset()
	default:
		return fmt.Errorf("imagewire: the writer (%T) cannot start over: give Animate an *os.File, a "+
			"*bytes.Buffer or a Restarter", s.w)
	}
	if err != nil {
		return fmt.Errorf("imagewire: starting the video over: %w", err)
	}
	s.digest.Reset()
	s.written = 0
	return nil
}

// finish is the verified result once the stream has ended.
func (s *videoSink) finish() (*animatev1.AnimateResult, error) {
	if s.result == nil {
		return nil, &Error{Code: codes.DataLoss, Message: "stream ended without a result"}
	}
	return s.result, nil
}
