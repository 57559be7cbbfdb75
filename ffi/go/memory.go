package verity

// #include <stdlib.h>
// #include "verity.h"
import "C"

import "unsafe"

// emptyByte gives a non-NULL pointer for an empty value (NULL means
// "absent" to the verifiers).
var emptyByte byte

// ptr is the address of b's bytes for one C call, NULL when b is empty.
// The C functions never keep it after they return.
func ptr(b []byte) *C.uint8_t {
	if len(b) == 0 {
		return nil
	}
	return (*C.uint8_t)(unsafe.Pointer(&b[0]))
}

// valuePtr is ptr, except that an empty non-nil value is a non-NULL
// pointer (present and empty), and nil is NULL (absent).
func valuePtr(v []byte) *C.uint8_t {
	if v == nil {
		return nil
	}
	if len(v) == 0 {
		return (*C.uint8_t)(unsafe.Pointer(&emptyByte))
	}
	return (*C.uint8_t)(unsafe.Pointer(&v[0]))
}

// hashPtr is the address of a 32-byte hash for one C call.
func hashPtr(h *[32]byte) *C.uint8_t {
	return (*C.uint8_t)(unsafe.Pointer(&h[0]))
}

// take copies library-owned bytes into Go memory and frees them.
func take(b C.verity_bytes) []byte {
	defer C.verity_bytes_free(b)
	if b.len == 0 {
		return []byte{}
	}
	return C.GoBytes(unsafe.Pointer(b.ptr), C.int(b.len))
}

// cBuffer is a copy of many byte strings in C memory, for the batched
// calls: Go memory handed to C may not hold pointers to Go memory, so the
// slices (Go memory) point into one C allocation.
type cBuffer struct {
	base unsafe.Pointer
}

// copyAll copies every part into one C allocation and returns the
// verity_slice of each: a nil part is {NULL, 0}, an empty one a non-NULL
// pointer with length 0.
func (buf *cBuffer) copyAll(parts [][]byte) []C.verity_slice {
	total := 1 // one spare byte: the address of every empty part
	for _, p := range parts {
		total += len(p)
	}
	buf.base = C.malloc(C.size_t(total))
	if buf.base == nil {
		panic("verity: out of C memory")
	}
	mem := unsafe.Slice((*byte)(buf.base), total)
	slices := make([]C.verity_slice, len(parts))
	at := 1
	for i, p := range parts {
		switch {
		case p == nil:
		case len(p) == 0:
			slices[i].ptr = (*C.uint8_t)(buf.base)
		default:
			copy(mem[at:], p)
			slices[i].ptr = (*C.uint8_t)(unsafe.Pointer(&mem[at]))
			slices[i].len = C.size_t(len(p))
			at += len(p)
		}
	}
	return slices
}

func (buf *cBuffer) free() {
	if buf.base != nil {
		C.free(buf.base)
		buf.base = nil
	}
}

// slicePtr is the address of the first slice, NULL when there is none.
func slicePtr(s []C.verity_slice) *C.verity_slice {
	if len(s) == 0 {
		return nil
	}
	return &s[0]
}
