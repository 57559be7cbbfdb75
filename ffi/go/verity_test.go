package verity

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

func key(i int) []byte { return []byte(fmt.Sprintf("account-%04d", i)) }

func value(i, version int) []byte { return []byte(fmt.Sprintf("balance-%d-at-%d", i*7, version)) }

func mustOpen(t *testing.T, dir string, opts ...Option) *DB {
	t.Helper()
	db, err := Open(dir, append([]Option{WithCacheBytes(8 << 20)}, opts...)...)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	return db
}

// stageVersions stages `versions` versions without waiting (every key at
// version 1, even keys rewritten at each later one), then waits for each
// root and sync.
func stageVersions(db *DB, first, versions, keys int) ([][32]byte, error) {
	var commits []*Commit
	defer func() {
		for _, c := range commits {
			c.Close()
		}
	}()
	for v := first; v < first+versions; v++ {
		b := NewBatch()
		for i := 0; i < keys; i++ {
			if v > 1 && i%2 == 1 {
				continue
			}
			if err := b.Put(key(i), value(i, v)); err != nil {
				return nil, fmt.Errorf("put: %w", err)
			}
		}
		c, err := db.Commit(b)
		if err != nil {
			return nil, fmt.Errorf("commit %d: %w", v, err)
		}
		commits = append(commits, c)
		if c.Version() != uint64(v) {
			return nil, fmt.Errorf("commit got version %d, want %d", c.Version(), v)
		}
		if b.Len() != 0 {
			return nil, fmt.Errorf("the batch is not emptied by Commit")
		}
		b.Close()
	}
	var roots [][32]byte
	for _, c := range commits {
		root, err := c.Root()
		if err != nil {
			return nil, fmt.Errorf("root: %w", err)
		}
		if err := c.WaitDurable(); err != nil {
			return nil, fmt.Errorf("durable: %w", err)
		}
		roots = append(roots, root)
	}
	return roots, nil
}

func commitVersions(t *testing.T, db *DB, first, versions, keys int) [][32]byte {
	t.Helper()
	roots, err := stageVersions(db, first, versions, keys)
	if err != nil {
		t.Fatal(err)
	}
	return roots
}

// lastHash is the largest key hash: a range proof that ends there reached
// the end of the state.
var lastHash = func() (h [32]byte) {
	for i := range h {
		h[i] = 0xff
	}
	return h
}()

func TestLifecycle(t *testing.T) {
	const versions, keys = 5, 150
	dir := t.TempDir()
	db := mustOpen(t, dir)
	if v, err := db.LatestVersion(); err != nil || v != 0 {
		t.Fatalf("latest version of a new store: %d, %v", v, err)
	}
	if ABIVersion()>>16 != ABIMajor {
		t.Fatalf("ABI %x, package built for major %d", ABIVersion(), ABIMajor)
	}
	roots := commitVersions(t, db, 1, versions, keys)
	if roots[0] == roots[1] {
		t.Fatal("two versions with different states have one root")
	}

	old, err := db.Snapshot(1)
	if err != nil {
		t.Fatal(err)
	}
	latest, err := db.Snapshot(versions)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := old.Get(key(2)); err != nil || !bytes.Equal(got, value(2, 1)) {
		t.Fatalf("old get: %q, %v", got, err)
	}
	if got, err := latest.Get(key(2)); err != nil || !bytes.Equal(got, value(2, versions)) {
		t.Fatalf("latest get: %q, %v", got, err)
	}
	if _, err := latest.Get([]byte("nobody")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent key: %v", err)
	}
	if root, err := latest.Root(); err != nil || root != roots[versions-1] {
		t.Fatalf("snapshot root %x, %v", root, err)
	}

	// Proofs: verified; a wrong value, a wrong root, a tampered proof and
	// a proof of presence taken as one of absence are refused.
	proof, err := latest.Prove(key(4))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyProof(roots[versions-1], key(4), value(4, versions), proof); err != nil {
		t.Fatalf("verify: %v", err)
	}
	for _, bad := range []error{
		VerifyProof(roots[versions-1], key(4), []byte("forged"), proof),
		VerifyProof(roots[0], key(4), value(4, versions), proof),
		VerifyProof(roots[versions-1], key(4), nil, proof),
		VerifyProof(roots[versions-1], key(4), value(4, versions), proof[:len(proof)-1]),
	} {
		if !errors.Is(bad, ErrProofInvalid) {
			t.Fatalf("a bad claim was not refused: %v", bad)
		}
	}
	for at := range proof {
		tampered := append([]byte(nil), proof...)
		tampered[at] ^= 0x40
		if err := VerifyProof(roots[versions-1], key(4), value(4, versions), tampered); !errors.Is(err, ErrProofInvalid) {
			t.Fatalf("proof with byte %d changed: %v", at, err)
		}
	}
	absent, err := latest.Prove([]byte("nobody"))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyProof(roots[versions-1], []byte("nobody"), nil, absent); err != nil {
		t.Fatalf("absence: %v", err)
	}
	var perr *Error
	if err := VerifyProof(roots[0], []byte("nobody"), nil, absent); !errors.As(err, &perr) || perr.Code != CodeProofInvalid {
		t.Fatalf("errors.As gives the code: %v", err)
	}

	// Batched reads and a multiproof.
	asked := [][]byte{key(1), []byte("missing"), key(6)}
	got, err := latest.GetMany(asked)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[0], value(1, 1)) || got[1] != nil || !bytes.Equal(got[2], value(6, versions)) {
		t.Fatalf("get many: %q", got)
	}
	multi, err := latest.ProveMany(asked)
	if err != nil {
		t.Fatal(err)
	}
	claims := []Claim{{asked[2], got[2]}, {asked[0], got[0]}, {asked[1], nil}}
	if err := VerifyMultiproof(roots[versions-1], claims, multi); err != nil {
		t.Fatalf("multiproof: %v", err)
	}
	claims[2].Value = []byte("x")
	if err := VerifyMultiproof(roots[versions-1], claims, multi); !errors.Is(err, ErrProofInvalid) {
		t.Fatalf("a false claim in a multiproof: %v", err)
	}

	// Iteration and range proofs see every entry once.
	it, err := latest.Iterator(nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for it.Next() {
		h, err := KeyHash(it.Key())
		if err != nil || h != it.KeyHash() {
			t.Fatalf("key hash of %q", it.Key())
		}
		seen++
	}
	if it.Err() != nil || seen != keys {
		t.Fatalf("iterated %d entries (want %d): %v", seen, keys, it.Err())
	}
	it.Close()
	it.Close()
	var from [32]byte
	synced := 0
	for round := 0; ; round++ {
		rp, err := latest.ProveRange(from, 40)
		if err != nil {
			t.Fatal(err)
		}
		to, err := VerifyRangeProof(roots[versions-1], rp)
		if err != nil {
			t.Fatalf("range proof: %v", err)
		}
		if len(rp.Entries) > 0 {
			short := rp
			short.Entries = rp.Entries[1:]
			if _, err := VerifyRangeProof(roots[versions-1], short); !errors.Is(err, ErrProofInvalid) {
				t.Fatalf("a range with an entry left out: %v", err)
			}
		}
		synced += len(rp.Entries)
		if to == lastHash || round > 100 {
			break
		}
		from = to
		for i := 31; i >= 0; i-- {
			from[i]++
			if from[i] != 0 {
				break
			}
		}
	}
	if synced != keys {
		t.Fatalf("range proofs covered %d entries, want %d", synced, keys)
	}

	stats, err := db.Stats()
	if err != nil || stats.LatestDurable != versions || stats.LatestStaged != versions {
		t.Fatalf("stats %+v, %v", stats, err)
	}

	// Prune, and what is asked of pruned or future versions.
	if err := db.Prune(versions + 3); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("prune past the durable version: %v", err)
	}
	if err := db.Prune(3); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Snapshot(1); !errors.Is(err, ErrVersionPruned) {
		t.Fatalf("pruned version: %v", err)
	}
	if _, err := db.Snapshot(versions + 1); !errors.Is(err, ErrVersionUnknown) {
		t.Fatalf("future version: %v", err)
	}

	// A second open of the same store is refused while this one lives.
	if _, err := Open(dir); !errors.Is(err, ErrBusy) {
		t.Fatalf("second open: %v", err)
	}

	// Close: twice is fine; handles answer ErrClosed and close themselves.
	it, err = latest.Iterator(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := latest.Get(key(2)); !errors.Is(err, ErrClosed) {
		t.Fatalf("get after close: %v", err)
	}
	if _, err := latest.Root(); !errors.Is(err, ErrClosed) {
		t.Fatalf("root after close: %v", err)
	}
	if it.Next() || !errors.Is(it.Err(), ErrClosed) {
		t.Fatalf("iterator after close: %v", it.Err())
	}
	it.Close()
	if _, err := db.Snapshot(versions); !errors.Is(err, ErrClosed) {
		t.Fatalf("snapshot after close: %v", err)
	}
	if _, err := db.Commit(NewBatch()); !errors.Is(err, ErrClosed) {
		t.Fatalf("commit after close: %v", err)
	}
	if _, err := db.LatestVersion(); !errors.Is(err, ErrClosed) {
		t.Fatalf("latest after close: %v", err)
	}
	old.Close()

	// Reopen while a snapshot of the closed database is still held.
	db = mustOpen(t, dir)
	defer db.Close()
	latest.Close()
	latest.Close()
	if _, err := latest.Get(key(2)); !errors.Is(err, ErrClosed) {
		t.Fatalf("get on a closed snapshot: %v", err)
	}
	if v, err := db.LatestVersion(); err != nil || v != versions {
		t.Fatalf("latest after reopen: %d, %v", v, err)
	}
	snap, err := db.Snapshot(versions)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	if root, err := snap.Root(); err != nil || root != roots[versions-1] {
		t.Fatalf("root after reopen: %x, %v", root, err)
	}
	if got, err := snap.Get(key(8)); err != nil || !bytes.Equal(got, value(8, versions)) {
		t.Fatalf("get after reopen: %q, %v", got, err)
	}
	if _, err := db.Snapshot(2); !errors.Is(err, ErrVersionPruned) {
		t.Fatalf("pruned version after reopen: %v", err)
	}
}

func TestBadInputs(t *testing.T) {
	dir := t.TempDir()
	for _, path := range []string{"", "bad\x00path", filepath.Join(dir, "\xff\xfe")} {
		if _, err := Open(path); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("open %q: %v", path, err)
		}
	}
	db := mustOpen(t, dir)
	defer db.Close()
	b := NewBatch()
	defer b.Close()
	long := make([]byte, MaxKeyLen+1)
	huge := make([]byte, MaxValueLen+1)
	for name, err := range map[string]error{
		"nil key":       b.Put(nil, []byte("v")),
		"empty key":     b.Put([]byte{}, []byte("v")),
		"long key":      b.Put(long, []byte("v")),
		"huge value":    b.Put([]byte("k"), huge),
		"delete nil":    b.Delete(nil),
		"delete long":   b.Delete(long),
		"verify nil":    VerifyProof([32]byte{}, []byte("k"), nil, nil),
		"verify no key": VerifyProof([32]byte{}, nil, nil, []byte{1}),
	} {
		if !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if b.Len() != 0 {
		t.Fatalf("refused writes were kept: %d", b.Len())
	}
	// The limits themselves are taken, and an empty value.
	if err := b.Put(long[:MaxKeyLen], []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := b.Put([]byte("empty"), nil); err != nil {
		t.Fatal(err)
	}
	c, err := db.Commit(b)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WaitDurable(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Commit(nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("nil batch: %v", err)
	}
	snap, err := db.Snapshot(1)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	if v, err := snap.Get([]byte("empty")); err != nil || v == nil || len(v) != 0 {
		t.Fatalf("empty value: %q, %v", v, err)
	}
	if _, err := snap.Get(nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("get nil: %v", err)
	}
	if _, err := snap.Get(long); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("get long: %v", err)
	}
	if _, err := snap.GetMany([][]byte{[]byte("k"), nil}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("get many with a nil key: %v", err)
	}
	if _, err := snap.Prove([]byte{}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("prove empty key: %v", err)
	}
	if _, err := snap.ProveRange([32]byte{}, 0); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("range of 0: %v", err)
	}
	root, err := snap.Root()
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyProof(root, []byte("k"), nil, []byte("garbage")); !errors.Is(err, ErrProofInvalid) {
		t.Fatalf("garbage proof: %v", err)
	}
	if err := VerifyMultiproof(root, []Claim{{Key: []byte("a"), Value: []byte("1")}, {Key: []byte("a")}}, []byte{1}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("contradicting claims: %v", err)
	}
	if _, err := KeyHash(nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("key hash of nil: %v", err)
	}
	// Closing handles twice is fine.
	snap.Close()
	snap.Close()
	c.Close()
	b.Close()
	if err := b.Put([]byte("k"), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("put on a closed batch: %v", err)
	}
}

// Many goroutines read and prove through one snapshot while later
// versions commit and, at the end, while the database closes under them.
func TestManyGoroutinesReadOneSnapshot(t *testing.T) {
	const keys, readers, rounds = 100, 16, 200
	db := mustOpen(t, t.TempDir())
	defer db.Close()
	roots := commitVersions(t, db, 1, 1, keys)
	snap, err := db.Snapshot(1)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()

	var wg sync.WaitGroup
	failures := make(chan error, readers+1)
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			for round := 0; round < rounds; round++ {
				i := (r*rounds + round) % keys
				got, err := snap.Get(key(i))
				if err != nil || !bytes.Equal(got, value(i, 1)) {
					failures <- fmt.Errorf("reader %d: get %d: %q, %v", r, i, got, err)
					return
				}
				if round%8 == 0 {
					proof, err := snap.Prove(key(i))
					if err == nil {
						err = VerifyProof(roots[0], key(i), got, proof)
					}
					if err != nil {
						failures <- fmt.Errorf("reader %d: proof %d: %v", r, i, err)
						return
					}
				}
			}
		}(r)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Later versions never show through the snapshot.
		if _, err := stageVersions(db, 2, 4, keys); err != nil {
			failures <- err
		}
	}()
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}

	// Readers racing a close see their values, then ErrClosed, nothing
	// else: the database closes once every reader has read, while they go
	// on reading.
	var racing sync.WaitGroup
	started := make(chan struct{}, readers)
	for r := 0; r < readers; r++ {
		racing.Add(1)
		go func(r int) {
			defer racing.Done()
			for round := 0; round < 1000000; round++ {
				got, err := snap.Get(key(r))
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil || !bytes.Equal(got, value(r, 1)) {
					t.Errorf("reader %d during close: %q, %v", r, got, err)
					return
				}
				if round == 0 {
					started <- struct{}{}
				}
			}
			t.Errorf("reader %d never saw the close", r)
		}(r)
	}
	for r := 0; r < readers; r++ {
		<-started
	}
	db.Close()
	racing.Wait()
}

// The README's Go quick-start (examples/quickstart) builds and runs.
func TestQuickstartRuns(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(goBin, "run", "./examples/quickstart", filepath.Join(t.TempDir(), "db"))
	cmd.Env = os.Environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go run ./examples/quickstart: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("alice = 10, proven at version 1")) {
		t.Fatalf("unexpected output: %s", out)
	}
}
