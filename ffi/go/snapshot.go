package verity

// #include <stdlib.h>
// #include "verity.h"
import "C"

import (
	"runtime"
	"sync"
)

// Snapshot is a consistent view of one version. Safe for concurrent use:
// any number of goroutines may read through one snapshot while later
// versions commit.
type Snapshot struct {
	mu      sync.RWMutex
	c       *C.verity_snapshot
	version uint64
}

func (s *Snapshot) use(f func(*C.verity_snapshot) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.c == nil {
		return closed("the snapshot")
	}
	return f(s.c)
}

// Version is the version the snapshot sees.
func (s *Snapshot) Version() uint64 {
	return s.version
}

// Get returns a copy of the value of key, or ErrNotFound.
func (s *Snapshot) Get(key []byte) ([]byte, error) {
	var value []byte
	err := s.use(func(cs *C.verity_snapshot) error {
		var out C.verity_bytes
		var cerr *C.verity_error
		err := check(C.verity_snapshot_get(cs, ptr(key), C.size_t(len(key)), &out, &cerr), &cerr)
		value = take(out)
		return err
	})
	if err != nil {
		return nil, err
	}
	return value, nil
}

// GetMany returns the values of many keys at once (the disk reads are
// submitted together), in the order asked; an absent key's value is nil.
func (s *Snapshot) GetMany(keys [][]byte) ([][]byte, error) {
	values := make([][]byte, len(keys))
	if len(keys) == 0 {
		return values, nil
	}
	err := s.use(func(cs *C.verity_snapshot) error {
		var buf cBuffer
		defer buf.free()
		slices := buf.copyAll(keys)
		outs := make([]C.verity_bytes, len(keys))
		found := make([]C.uint8_t, len(keys))
		var cerr *C.verity_error
		st := C.verity_snapshot_get_many(cs, slicePtr(slices), C.size_t(len(keys)), &outs[0], &found[0], &cerr)
		if err := check(st, &cerr); err != nil {
			return err
		}
		for i := range outs {
			v := take(outs[i])
			if found[i] != 0 {
				values[i] = v
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return values, nil
}

// Root waits until the version is merkleized and returns its state root.
func (s *Snapshot) Root() ([32]byte, error) {
	var root [32]byte
	err := s.use(func(cs *C.verity_snapshot) error {
		var cerr *C.verity_error
		return check(C.verity_snapshot_root(cs, hashPtr(&root), &cerr), &cerr)
	})
	return root, err
}

// Prove returns a proof of the value, or the absence, of key against the
// snapshot's root; VerifyProof checks it.
func (s *Snapshot) Prove(key []byte) ([]byte, error) {
	var proof []byte
	err := s.use(func(cs *C.verity_snapshot) error {
		var out C.verity_bytes
		var cerr *C.verity_error
		err := check(C.verity_snapshot_prove(cs, ptr(key), C.size_t(len(key)), &out, &cerr), &cerr)
		proof = take(out)
		return err
	})
	if err != nil {
		return nil, err
	}
	return proof, nil
}

// ProveMany returns one proof for many keys (shared nodes once);
// VerifyMultiproof checks it.
func (s *Snapshot) ProveMany(keys [][]byte) ([]byte, error) {
	var proof []byte
	err := s.use(func(cs *C.verity_snapshot) error {
		var buf cBuffer
		defer buf.free()
		slices := buf.copyAll(keys)
		var out C.verity_bytes
		var cerr *C.verity_error
		err := check(C.verity_snapshot_prove_many(cs, slicePtr(slices), C.size_t(len(keys)), &out, &cerr), &cerr)
		proof = take(out)
		return err
	})
	if err != nil {
		return nil, err
	}
	return proof, nil
}

// RangeEntry is one entry of a range proof: hashes, not the key and value.
type RangeEntry struct {
	KeyHash   [32]byte
	ValueHash [32]byte
}

// RangeProof is up to a limit of entries from a key hash on, in key-hash
// order, and the proof that none between them is missing.
type RangeProof struct {
	From    [32]byte
	Entries []RangeEntry
	Proof   []byte
}

// ProveRange returns up to limit entries (1 to MaxRangeEntries) with key
// hash >= from and their range proof; VerifyRangeProof checks it.
func (s *Snapshot) ProveRange(from [32]byte, limit int) (RangeProof, error) {
	rp := RangeProof{From: from}
	if limit <= 0 {
		return rp, invalid("a range proof needs a limit of at least 1")
	}
	err := s.use(func(cs *C.verity_snapshot) error {
		var entries, proof C.verity_bytes
		var cerr *C.verity_error
		st := C.verity_snapshot_prove_range(cs, hashPtr(&from), C.size_t(limit), &entries, &proof, &cerr)
		flat := take(entries)
		rp.Proof = take(proof)
		if err := check(st, &cerr); err != nil {
			return err
		}
		rp.Entries = make([]RangeEntry, len(flat)/64)
		for i := range rp.Entries {
			copy(rp.Entries[i].KeyHash[:], flat[64*i:])
			copy(rp.Entries[i].ValueHash[:], flat[64*i+32:])
		}
		return nil
	})
	return rp, err
}

// Iterator walks a version's entries in key-hash order (the order of the
// trie, not of the keys). One goroutine at a time:
//
//	it, err := snap.Iterator(nil)
//	for it.Next() { use(it.Key(), it.Value()) }
//	err = it.Err()
//	it.Close()
type Iterator struct {
	mu      sync.Mutex
	c       *C.verity_iter
	key     []byte
	value   []byte
	keyHash [32]byte
	err     error
}

// Iterator opens an iterator over the entries with key hash >= *from
// (nil: from the first entry). It holds the version by itself: the
// snapshot may be closed first.
func (s *Snapshot) Iterator(from *[32]byte) (*Iterator, error) {
	var out *C.verity_iter
	err := s.use(func(cs *C.verity_snapshot) error {
		var start *C.uint8_t
		if from != nil {
			f := *from
			start = hashPtr(&f)
		}
		var cerr *C.verity_error
		return check(C.verity_iter_open(cs, start, &out, &cerr), &cerr)
	})
	if err != nil {
		return nil, err
	}
	it := &Iterator{c: out}
	runtime.SetFinalizer(it, (*Iterator).Close)
	return it, nil
}

// Next moves to the next entry; false at the end or on a failure (Err).
func (it *Iterator) Next() bool {
	it.mu.Lock()
	defer it.mu.Unlock()
	it.key, it.value = nil, nil
	if it.c == nil || it.err != nil {
		if it.c == nil && it.err == nil {
			it.err = closed("the iterator")
		}
		return false
	}
	var key, value C.verity_bytes
	var keyHash [32]byte
	var cerr *C.verity_error
	st := C.verity_iter_next(it.c, &key, &value, hashPtr(&keyHash), &cerr)
	k, v := take(key), take(value)
	switch err := check(st, &cerr); err {
	case nil:
		it.key, it.value, it.keyHash = k, v, keyHash
		return true
	case ErrNotFound:
		return false
	default:
		it.err = err
		return false
	}
}

// Key is the current entry's key.
func (it *Iterator) Key() []byte { return it.key }

// Value is the current entry's value.
func (it *Iterator) Value() []byte { return it.value }

// KeyHash is the current entry's key hash.
func (it *Iterator) KeyHash() [32]byte { return it.keyHash }

// Err is the failure that ended the iteration, nil at a normal end.
func (it *Iterator) Err() error {
	it.mu.Lock()
	defer it.mu.Unlock()
	return it.err
}

// Close releases the iterator. Calling it again does nothing.
func (it *Iterator) Close() error {
	it.mu.Lock()
	defer it.mu.Unlock()
	if it.c != nil {
		C.verity_iter_free(it.c)
		it.c = nil
		runtime.SetFinalizer(it, nil)
	}
	return nil
}

// Close releases the snapshot. Calling it again does nothing.
func (s *Snapshot) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		C.verity_snapshot_free(s.c)
		s.c = nil
		runtime.SetFinalizer(s, nil)
	}
	return nil
}
