package vaultclient

import (
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// AntomDomain is the ErrorInfo domain of Antom's own result codes.
const AntomDomain = "antom"

// Details are the google.rpc details the service attaches to a failed call's status.
type Details struct {
	// Code is the call's status code (codes.OK for a nil error).
	Code codes.Code
	// FieldViolations name each invalid request field by its proto path (INVALID_ARGUMENT).
	FieldViolations []*errdetails.BadRequest_FieldViolation
	// ErrorInfo says why, machine-readable; Antom's verdicts have domain "antom", Antom's
	// resultCode as reason and result_status, result_message in metadata.
	ErrorInfo *errdetails.ErrorInfo
	// RetryDelay is how long the service asks to wait before retrying (UNAVAILABLE); 0 if unset.
	RetryDelay time.Duration
}

// AntomReason is Antom's resultCode when Antom's verdict caused the failure, else "".
func (d Details) AntomReason() string {
	if d.ErrorInfo.GetDomain() != AntomDomain {
		return ""
	}
	return d.ErrorInfo.GetReason()
}

// DetailsOf decodes the status details of err, as returned by a vaultv1 call. Detail types
// it does not know are skipped.
func DetailsOf(err error) Details {
	st := status.Convert(err)
	details := Details{Code: st.Code()}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.BadRequest:
			details.FieldViolations = append(details.FieldViolations, d.GetFieldViolations()...)
		case *errdetails.ErrorInfo:
			details.ErrorInfo = d
		case *errdetails.RetryInfo:
			delay := d.GetRetryDelay()
			details.RetryDelay = time.Duration(delay.GetSeconds())*time.Second + time.Duration(delay.GetNanos())
		}
	}
	return details
}
