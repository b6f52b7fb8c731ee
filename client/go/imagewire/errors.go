package imagewire

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FieldViolation is a request field the server (or the client's own checks) rejected, and why.
type FieldViolation struct {
	Field       string
	Description string
}

// Error is a failed call: the gRPC status, the call's request id, the google.rpc.BadRequest field violations the
// server sent, and for a stream what had arrived before it failed.
type Error struct {
	Code       codes.Code
	Message    string
	Violations []FieldViolation
	// RequestID is the x-request-id the call was sent with, which the server's log line carries.
	RequestID string
	// ResponsesReceived and BytesReceived (of video) say how far a stream had got; gRPC retries an attempt
	// only until its first response, so a failure after one is never retried by gRPC.
	ResponsesReceived int
	BytesReceived     int64
	status            *status.Status
}

// Error is "CODE: message", the code as the protos name it (INVALID_ARGUMENT), like the other clients' errors.
func (e *Error) Error() string {
	text := CodeName(e.Code) + ": " + e.Message
	if e.ResponsesReceived > 0 {
		text += fmt.Sprintf(" (after %d responses and %d video bytes had arrived)", e.ResponsesReceived,
			e.BytesReceived)
	}
	return text
}

// GRPCStatus lets status.FromError and status.Code read the error.
func (e *Error) GRPCStatus() *status.Status {
	if e.status != nil {
		return e.status
	}
	return status.New(e.Code, e.Message)
}

// CodeName is a status code's name as the protos and other gRPC languages spell it, such as DEADLINE_EXCEEDED.
func CodeName(code codes.Code) string {
	var name strings.Builder
	for i, r := range code.String() {
		if i > 0 && unicode.IsUpper(r) && !unicode.IsUpper(rune(code.String()[i-1])) {
			name.WriteByte('_')
		}
		name.WriteRune(unicode.ToUpper(r))
	}
	return name.String()
}

// invalidArgument is a request refused before it was sent, in the shape of the server's INVALID_ARGUMENT.
func invalidArgument(field, description string) *Error {
	return &Error{Code: codes.InvalidArgument, Message: field + ": " + description,
		Violations: []FieldViolation{{Field: field, Description: description}}}
}

// callError turns err from a call into an *Error carrying requestID and what the stream had received; an error that
// is no gRPC status (the writer's, say) is returned as it is.
func callError(err error, requestID string, got received) error {
	var known *Error
	if errors.As(err, &known) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	failed := &Error{Code: st.Code(), Message: st.Message(), RequestID: requestID, status: st,
		ResponsesReceived: got.responses, BytesReceived: got.bytes}
	for _, detail := range st.Details() {
		if badRequest, ok := detail.(*errdetails.BadRequest); ok {
			for _, v := range badRequest.GetFieldViolations() {
				failed.Violations = append(failed.Violations, FieldViolation{v.GetField(), v.GetDescription()})
			}
		}
	}
	return failed
}

// received counts what a stream has delivered.
type received struct {
	responses int
	bytes     int64
}
