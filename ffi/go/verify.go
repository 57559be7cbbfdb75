package verity

// #include <stdlib.h>
// #include "verity.h"
import "C"

// VerifyProof checks that proof (from Snapshot.Prove) shows, under root,
// that key has value, or that key is absent when value is nil (an empty
// non-nil value is a present, empty value). It returns nil when it does,
// an error matching ErrProofInvalid when it does not.
func VerifyProof(root [32]byte, key, value, proof []byte) error {
	if proof == nil {
		return invalid("proof is nil")
	}
	var cerr *C.verity_error
	st := C.verity_verify_proof(hashPtr(&root), ptr(key), C.size_t(len(key)),
		valuePtr(value), C.size_t(len(value)), valuePtr(proof), C.size_t(len(proof)), &cerr)
	return check(st, &cerr)
}

// Claim is what a multiproof is checked against: Key has Value, or is
// absent when Value is nil.
type Claim struct {
	Key   []byte
	Value []byte
}

// VerifyMultiproof checks a proof from Snapshot.ProveMany against claims,
// in any order. Results as for VerifyProof.
func VerifyMultiproof(root [32]byte, claims []Claim, proof []byte) error {
	if proof == nil {
		return invalid("proof is nil")
	}
	keys := make([][]byte, len(claims))
	values := make([][]byte, len(claims))
	for i, c := range claims {
		keys[i], values[i] = c.Key, c.Value
	}
	var keyBuf, valueBuf cBuffer
	defer keyBuf.free()
	defer valueBuf.free()
	keySlices := keyBuf.copyAll(keys)
	valueSlices := valueBuf.copyAll(values)
	cclaims := make([]C.verity_claim, len(claims))
	for i := range cclaims {
		cclaims[i].key = keySlices[i].ptr
		cclaims[i].key_len = keySlices[i].len
		cclaims[i].value = valueSlices[i].ptr
		cclaims[i].value_len = valueSlices[i].len
	}
	var first *C.verity_claim
	if len(cclaims) > 0 {
		first = &cclaims[0]
	}
	var cerr *C.verity_error
	st := C.verity_verify_multiproof(hashPtr(&root), first, C.size_t(len(cclaims)),
		valuePtr(proof), C.size_t(len(proof)), &cerr)
	return check(st, &cerr)
}

// VerifyRangeProof checks a range proof from Snapshot.ProveRange under
// root: that its entries are every entry between rp.From and the proof's
// upper bound, which it returns (a caller syncing state continues after
// it, unless it is all 0xff: the range reached the end).
func VerifyRangeProof(root [32]byte, rp RangeProof) ([32]byte, error) {
	var to [32]byte
	if rp.Proof == nil {
		return to, invalid("proof is nil")
	}
	flat := make([]byte, 64*len(rp.Entries))
	for i, e := range rp.Entries {
		copy(flat[64*i:], e.KeyHash[:])
		copy(flat[64*i+32:], e.ValueHash[:])
	}
	from := rp.From
	var cerr *C.verity_error
	st := C.verity_verify_range_proof(hashPtr(&root), hashPtr(&from), ptr(flat), C.size_t(len(flat)),
		valuePtr(rp.Proof), C.size_t(len(rp.Proof)), hashPtr(&to), &cerr)
	return to, check(st, &cerr)
}

// KeyHash is the 32-byte hash the trie files key under (the order of
// iteration and of range proofs).
func KeyHash(key []byte) ([32]byte, error) {
	var out [32]byte
	if st := C.verity_key_hash(ptr(key), C.size_t(len(key)), hashPtr(&out)); st != C.VERITY_OK {
		return out, invalid("a key is 1 to %d bytes", MaxKeyLen)
	}
	return out, nil
}

// ValueHash is the 32-byte hash the trie stores for value (what range
// proof entries carry).
func ValueHash(value []byte) ([32]byte, error) {
	var out [32]byte
	if st := C.verity_value_hash(ptr(value), C.size_t(len(value)), hashPtr(&out)); st != C.VERITY_OK {
		return out, invalid("a value is at most %d bytes", MaxValueLen)
	}
	return out, nil
}
