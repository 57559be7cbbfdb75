// Package verity is the Go binding of Verity, a versioned, authenticated
// key-value store: every committed batch is a version, and every retained
// version can be read and proven against its 32-byte state root.
//
// It calls the C library (libverity, built by
// `cargo build --release -p verity-ffi`) through cgo. Point the linker at
// it, for example:
//
//	CGO_LDFLAGS="-L$TARGET/release -Wl,-rpath,$TARGET/release" go build
//
// Values and proofs are copied into Go memory; keys and values passed in
// are copied by the library, so the caller may reuse its slices at once.
// DB, Snapshot and Commit may be used by many goroutines at once; Batch
// and Iterator by one at a time. Every handle has a Close (safe to call
// twice); a finalizer releases handles that were not closed.
package verity

/*
#cgo CFLAGS: -I${SRCDIR}/../include
#cgo LDFLAGS: -lverity
#include <stdlib.h>
#include "verity.h"
*/
import "C"

import (
	"runtime"
	"strings"
	"sync"
	"unsafe"
)

// Limits of the library.
const (
	// MaxKeyLen is the longest key, in bytes (keys are 1 to MaxKeyLen
	// bytes long).
	MaxKeyLen = C.VERITY_MAX_KEY_LEN
	// MaxValueLen is the longest value, in bytes.
	MaxValueLen = C.VERITY_MAX_VALUE_LEN
	// MaxRangeEntries is the most entries one range proof covers.
	MaxRangeEntries = C.VERITY_MAX_RANGE_ENTRIES
)

// ABIVersion is the C ABI version of the loaded library,
// (major << 16) | minor.
func ABIVersion() uint32 {
	return uint32(C.verity_abi_version())
}

// ABIMajor and ABIMinor are the C ABI version this package was built
// against.
const (
	ABIMajor = C.VERITY_ABI_MAJOR
	ABIMinor = C.VERITY_ABI_MINOR
)

type config struct {
	cacheBytes      *uint64
	retain          uint64
	syncEveryCommit bool
}

// Option changes how Open runs the database.
type Option func(*config)

// WithCacheBytes sets the memory for caches, in bytes: a quarter for the
// block cache, the rest for decoded trie pages (default 1 GiB in all).
func WithCacheBytes(n uint64) Option {
	return func(c *config) { c.cacheBytes = &n }
}

// WithRetainVersions keeps the newest n versions readable and prunes
// older ones as new versions commit; 0 (the default) keeps every version
// until Prune.
func WithRetainVersions(n uint64) Option {
	return func(c *config) { c.retain = n }
}

// WithSyncEveryCommit syncs the write-ahead log after every version
// instead of once per group of waiting versions (the default). Either way
// a version is durable once WaitDurable returns nil.
func WithSyncEveryCommit() Option {
	return func(c *config) { c.syncEveryCommit = true }
}

// DB is an open database. Safe for concurrent use.
type DB struct {
	mu sync.RWMutex
	c  *C.verity_db
}

// Open opens (or creates) the store in the directory path. It fails with
// ErrBusy when the store is open elsewhere, ErrInvalidArgument for an
// empty path, one that is not UTF-8 or holds a NUL byte.
func Open(path string, opts ...Option) (*DB, error) {
	if strings.IndexByte(path, 0) >= 0 {
		return nil, invalid("path holds a NUL byte")
	}
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	copts := C.verity_options_new()
	defer C.verity_options_free(copts)
	if cfg.cacheBytes != nil {
		C.verity_options_set_cache_bytes(copts, C.uint64_t(*cfg.cacheBytes))
	}
	C.verity_options_set_retain_versions(copts, C.uint64_t(cfg.retain))
	if cfg.syncEveryCommit {
		C.verity_options_set_sync(copts, 1)
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var handle *C.verity_db
	var cerr *C.verity_error
	if err := check(C.verity_open(cpath, copts, &handle, &cerr), &cerr); err != nil {
		return nil, err
	}
	db := &DB{c: handle}
	runtime.SetFinalizer(db, (*DB).Close)
	return db, nil
}

// use runs f with the C handle under the read lock, or returns ErrClosed.
func (db *DB) use(f func(*C.verity_db) error) error {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.c == nil {
		return closed("the database")
	}
	return f(db.c)
}

// Close waits until every committed version is durable and closes the
// database. Snapshots and commits of it answer ErrClosed from then on (and
// still need their own Close). Calling Close again does nothing.
func (db *DB) Close() error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.c != nil {
		C.verity_close(db.c)
		db.c = nil
		runtime.SetFinalizer(db, nil)
	}
	return nil
}

// Commit stages the batch as the next version and returns at once; the
// Commit tells when its root is known and when it is durable. The batch is
// emptied and may be refilled. Commit waits while the pipeline is full.
func (db *DB) Commit(b *Batch) (*Commit, error) {
	var out *C.struct_verity_commit
	err := db.use(func(cdb *C.verity_db) error {
		return b.use(func(cb *C.verity_batch) error {
			var cerr *C.verity_error
			return check(C.verity_commit(cdb, cb, &out, &cerr), &cerr)
		})
	})
	if err != nil {
		return nil, err
	}
	c := &Commit{c: out, version: uint64(C.verity_commit_version(out))}
	runtime.SetFinalizer(c, (*Commit).Close)
	return c, nil
}

// LatestVersion is the newest committed (staged) version, 0 for a new
// store: the newest version Snapshot accepts.
func (db *DB) LatestVersion() (uint64, error) {
	var v C.uint64_t
	err := db.use(func(cdb *C.verity_db) error {
		var cerr *C.verity_error
		return check(C.verity_latest_version(cdb, &v, &cerr), &cerr)
	})
	return uint64(v), err
}

// Snapshot opens a consistent view of version v: ErrVersionUnknown past
// the latest version, ErrVersionPruned below the oldest retained one.
func (db *DB) Snapshot(v uint64) (*Snapshot, error) {
	var out *C.verity_snapshot
	err := db.use(func(cdb *C.verity_db) error {
		var cerr *C.verity_error
		return check(C.verity_snapshot_open(cdb, C.uint64_t(v), &out, &cerr), &cerr)
	})
	if err != nil {
		return nil, err
	}
	s := &Snapshot{c: out, version: v}
	runtime.SetFinalizer(s, (*Snapshot).Close)
	return s, nil
}

// Prune makes versions below before unreadable; before may not pass the
// newest durable version (ErrInvalidArgument).
func (db *DB) Prune(before uint64) error {
	return db.use(func(cdb *C.verity_db) error {
		var cerr *C.verity_error
		return check(C.verity_prune(cdb, C.uint64_t(before), &cerr), &cerr)
	})
}

// Stats are figures of a database at one moment.
type Stats struct {
	LatestStaged, LatestMerkleized, LatestDurable, OldestRetained, InFlight uint64
	PageCachePages, PageCacheBytes, PageCacheHits, PageCacheMisses          uint64
	BlockCacheBytes, BlockCacheHits, BlockCacheMisses                       uint64
	SegmentFiles, SegmentBytes, WALBytes, CompactionDebtBytes               uint64
	Flushes, Compactions                                                    uint64
}

// Stats returns figures of the database now.
func (db *DB) Stats() (Stats, error) {
	var s C.verity_stats
	err := db.use(func(cdb *C.verity_db) error {
		var cerr *C.verity_error
		return check(C.verity_db_stats(cdb, &s, &cerr), &cerr)
	})
	return Stats{
		LatestStaged:        uint64(s.latest_staged),
		LatestMerkleized:    uint64(s.latest_merkleized),
		LatestDurable:       uint64(s.latest_durable),
		OldestRetained:      uint64(s.oldest_retained),
		InFlight:            uint64(s.in_flight),
		PageCachePages:      uint64(s.page_cache_pages),
		PageCacheBytes:      uint64(s.page_cache_bytes),
		PageCacheHits:       uint64(s.page_cache_hits),
		PageCacheMisses:     uint64(s.page_cache_misses),
		BlockCacheBytes:     uint64(s.block_cache_bytes),
		BlockCacheHits:      uint64(s.block_cache_hits),
		BlockCacheMisses:    uint64(s.block_cache_misses),
		SegmentFiles:        uint64(s.segment_files),
		SegmentBytes:        uint64(s.segment_bytes),
		WALBytes:            uint64(s.wal_bytes),
		CompactionDebtBytes: uint64(s.compaction_debt_bytes),
		Flushes:             uint64(s.flushes),
		Compactions:         uint64(s.compactions),
	}, err
}

// Batch holds the writes of one version; the last write of a key wins.
// One goroutine at a time.
type Batch struct {
	mu sync.Mutex
	c  *C.verity_batch
}

// NewBatch returns an empty batch.
func NewBatch() *Batch {
	b := &Batch{c: C.verity_batch_new()}
	runtime.SetFinalizer(b, (*Batch).Close)
	return b
}

func (b *Batch) use(f func(*C.verity_batch) error) error {
	if b == nil {
		return invalid("batch is nil")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.c == nil {
		return closed("the batch")
	}
	return f(b.c)
}

// Put sets key to value (both copied). ErrInvalidArgument for an empty or
// oversized key, an oversized value or a full batch.
func (b *Batch) Put(key, value []byte) error {
	return b.use(func(cb *C.verity_batch) error {
		var cerr *C.verity_error
		st := C.verity_batch_put(cb, ptr(key), C.size_t(len(key)), ptr(value), C.size_t(len(value)), &cerr)
		return check(st, &cerr)
	})
}

// Delete deletes key (an absent key is not an error).
func (b *Batch) Delete(key []byte) error {
	return b.use(func(cb *C.verity_batch) error {
		var cerr *C.verity_error
		return check(C.verity_batch_delete(cb, ptr(key), C.size_t(len(key)), &cerr), &cerr)
	})
}

// Len is the number of writes in the batch.
func (b *Batch) Len() int {
	n := 0
	_ = b.use(func(cb *C.verity_batch) error {
		n = int(C.verity_batch_len(cb))
		return nil
	})
	return n
}

// Close releases the batch. Calling it again does nothing.
func (b *Batch) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.c != nil {
		C.verity_batch_free(b.c)
		b.c = nil
		runtime.SetFinalizer(b, nil)
	}
	return nil
}

// Commit is the promise of a committed version. Safe for concurrent use.
type Commit struct {
	mu      sync.RWMutex
	c       *C.struct_verity_commit
	version uint64
}

func (c *Commit) use(f func(*C.struct_verity_commit) error) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.c == nil {
		return closed("the commit")
	}
	return f(c.c)
}

// Version is the version the batch was given.
func (c *Commit) Version() uint64 {
	return c.version
}

// Root waits until the version is merkleized and returns its state root.
func (c *Commit) Root() ([32]byte, error) {
	var root [32]byte
	err := c.use(func(cc *C.struct_verity_commit) error {
		var cerr *C.verity_error
		return check(C.verity_commit_root(cc, hashPtr(&root), &cerr), &cerr)
	})
	return root, err
}

// WaitDurable waits until the version is durable.
func (c *Commit) WaitDurable() error {
	return c.use(func(cc *C.struct_verity_commit) error {
		var cerr *C.verity_error
		return check(C.verity_commit_wait_durable(cc, &cerr), &cerr)
	})
}

// Close releases the handle (the version stays committed). Calling it
// again does nothing.
func (c *Commit) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c != nil {
		C.verity_commit_free(c.c)
		c.c = nil
		runtime.SetFinalizer(c, nil)
	}
	return nil
}
