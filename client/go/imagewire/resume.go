package imagewire

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
)

// Resume says how a download survives dropped connections: at most Attempts reconnections in all, the first after
// Backoff, each later one after twice the pause before it (at most MaxBackoff), each waiting at most
// ReconnectTimeout for the connection to come back. Resume{} never resumes.
type Resume struct {
	Attempts         int
	Backoff          time.Duration
	MaxBackoff       time.Duration
	ReconnectTimeout time.Duration
}

// DefaultResume is five reconnections after 0.5, 1, 2, 4 and 8 s, each waiting up to 30 s: the Python client's.
var DefaultResume = Resume{Attempts: 5, Backoff: 500 * time.Millisecond, MaxBackoff: 8 * time.Second,
	ReconnectTimeout: 30 * time.Second}

func (r Resume) check() error {
	if r.Attempts < 0 {
		return fmt.Errorf("imagewire: resume attempts must be >= 0, got %d", r.Attempts)
	}
	if r.Attempts > 0 && (r.Backoff <= 0 || r.MaxBackoff <= 0 || r.ReconnectTimeout <= 0) {
		return fmt.Errorf("imagewire: resume pauses and reconnect timeout must be positive, got %+v", r)
	}
	return nil
}

// pause is the pause before reconnection number attempt (0 first).
func (r Resume) pause(attempt int) time.Duration {
	pause := r.Backoff
	for i := 0; i < attempt && pause < r.MaxBackoff; i++ {
		pause *= 2
	}
	if pause > r.MaxBackoff {
		return r.MaxBackoff
	}
	return pause
}

// dropped says whether a failed stream lost its connection while the job may well go on: UNAVAILABLE, or a
// stream reset by a proxy (INTERNAL with "Stream removed" or RST_STREAM in its message), as every imagewire
// client treats them.
func dropped(err *Error) bool {
	switch err.Code {
	case codes.Unavailable:
		return true
	case codes.Internal:
		return strings.Contains(err.Message, "Stream removed") || strings.Contains(err.Message, "RST_STREAM")
	}
	return false
}
