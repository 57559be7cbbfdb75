package verity

// #include "verity.h"
import "C"

import (
	"errors"
	"fmt"
)

// Code is the status a call of the C library returned (verity_status).
type Code int32

// The codes of the C library; their values never change.
const (
	CodeOK              Code = C.VERITY_OK
	CodeNotFound        Code = C.VERITY_NOT_FOUND
	CodeInvalidArgument Code = C.VERITY_INVALID_ARGUMENT
	CodeCorruption      Code = C.VERITY_CORRUPTION
	CodeIO              Code = C.VERITY_IO
	CodeVersionPruned   Code = C.VERITY_VERSION_PRUNED
	CodeVersionUnknown  Code = C.VERITY_VERSION_UNKNOWN
	CodeClosed          Code = C.VERITY_CLOSED
	CodePoisoned        Code = C.VERITY_POISONED
	CodeProofInvalid    Code = C.VERITY_PROOF_INVALID
	CodeBusy            Code = C.VERITY_BUSY
	CodePanic           Code = C.VERITY_PANIC
)

// The kinds of failure, for errors.Is. Every error the package returns
// other than ErrNotFound is an *Error that unwraps to one of these.
var (
	// ErrNotFound: the key is not there (returned as is by Get).
	ErrNotFound = errors.New("verity: not found")
	// ErrInvalidArgument: an empty or oversized key, an oversized value, a
	// bad path, a version or limit the database refuses.
	ErrInvalidArgument = errors.New("verity: invalid argument")
	// ErrCorruption: bytes on disk are not what was written.
	ErrCorruption = errors.New("verity: corruption")
	// ErrIO: an I/O call failed.
	ErrIO = errors.New("verity: I/O error")
	// ErrVersionPruned: the version is older than the oldest retained one.
	ErrVersionPruned = errors.New("verity: version pruned")
	// ErrVersionUnknown: the version has not been committed yet.
	ErrVersionUnknown = errors.New("verity: version unknown")
	// ErrClosed: the database (or the handle) was closed.
	ErrClosed = errors.New("verity: closed")
	// ErrPoisoned: an earlier write or sync failed; reopen the database.
	ErrPoisoned = errors.New("verity: poisoned")
	// ErrProofInvalid: the proof does not show the claim under the root.
	ErrProofInvalid = errors.New("verity: proof invalid")
	// ErrBusy: the store is open elsewhere.
	ErrBusy = errors.New("verity: busy")
	// ErrPanic: the library panicked.
	ErrPanic = errors.New("verity: library panic")
)

var kinds = map[Code]error{
	CodeNotFound:        ErrNotFound,
	CodeInvalidArgument: ErrInvalidArgument,
	CodeCorruption:      ErrCorruption,
	CodeIO:              ErrIO,
	CodeVersionPruned:   ErrVersionPruned,
	CodeVersionUnknown:  ErrVersionUnknown,
	CodeClosed:          ErrClosed,
	CodePoisoned:        ErrPoisoned,
	CodeProofInvalid:    ErrProofInvalid,
	CodeBusy:            ErrBusy,
	CodePanic:           ErrPanic,
}

// Error is a failure of the library: its code and its message.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string {
	return "verity: " + e.Message
}

// Unwrap returns the kind of the failure (ErrCorruption, ErrClosed, ...).
func (e *Error) Unwrap() error {
	if kind, ok := kinds[e.Code]; ok {
		return kind
	}
	return nil
}

// invalid is an ErrInvalidArgument found on the Go side.
func invalid(format string, args ...interface{}) error {
	return &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf(format, args...)}
}

// closed is the ErrClosed of a handle closed on the Go side.
func closed(what string) error {
	return &Error{Code: CodeClosed, Message: what + " is closed"}
}

// check turns a status and the error the call stored in *cerr into a Go
// error, freeing the C error. It takes the error's address so that it
// reads it only after the call has run (Go leaves the order of a call's
// arguments and a plain variable unspecified).
func check(status C.verity_status, cerr **C.verity_error) error {
	switch Code(status) {
	case CodeOK:
		return nil
	case CodeNotFound:
		return ErrNotFound
	}
	e := &Error{Code: Code(status), Message: "unknown failure"}
	if *cerr != nil {
		e.Message = C.GoString(C.verity_error_message(*cerr))
		C.verity_error_free(*cerr)
		*cerr = nil
	}
	return e
}
