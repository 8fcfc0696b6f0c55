package oci

import (
	"encoding/json"
	"net/http"
)

// ErrorCode is an error code of the OCI Distribution Spec.
type ErrorCode string

// The codes the edge answers with, from the spec's error code table.
const (
	CodeBlobUnknown     ErrorCode = "BLOB_UNKNOWN"
	CodeDigestInvalid   ErrorCode = "DIGEST_INVALID"
	CodeManifestUnknown ErrorCode = "MANIFEST_UNKNOWN"
	CodeManifestInvalid ErrorCode = "MANIFEST_INVALID"
	CodeNameInvalid     ErrorCode = "NAME_INVALID"
	CodeNameUnknown     ErrorCode = "NAME_UNKNOWN"
	CodeSizeInvalid     ErrorCode = "SIZE_INVALID"
	CodeUnauthorized    ErrorCode = "UNAUTHORIZED"
	CodeDenied          ErrorCode = "DENIED"
	CodeUnsupported     ErrorCode = "UNSUPPORTED"
	CodeTooManyRequests ErrorCode = "TOOMANYREQUESTS"
	CodeRangeInvalid    ErrorCode = "RANGE_INVALID"
	// CodeUnavailable is distribution's code for a registry that cannot
	// serve yet (answered with 503 and Retry-After).
	CodeUnavailable ErrorCode = "UNAVAILABLE"
	// CodeUnknown is distribution's code for failures the spec has no code
	// for (an unreachable upstream, a storage fault).
	CodeUnknown ErrorCode = "UNKNOWN"
)

// Error is a registry error with the HTTP status it is answered with.
type Error struct {
	Status  int
	Code    ErrorCode
	Message string
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// NewError returns an *Error.
func NewError(status int, code ErrorCode, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
}

// WriteError writes e as the spec's error JSON. HEAD requests get the status
// and headers only, as the spec requires.
func WriteError(w http.ResponseWriter, r *http.Request, e *Error) {
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: e.Code, Message: e.Message}}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Del("Content-Length")
	h.Del("Docker-Content-Digest")
	h.Del("ETag")
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
