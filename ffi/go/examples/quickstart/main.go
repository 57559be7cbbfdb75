package main

import (
	"fmt"
	"log"
	"os"

	verity "example.invalid/verity/ffi/go"
)

func main() {
	dir := "quickstart-db"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	db, err := verity.Open(dir, verity.WithCacheBytes(64<<20))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	// Stage version 1: Commit returns at once, the root and the sync follow.
	batch := verity.NewBatch()
	defer batch.Close()
	if err := batch.Put([]byte("alice"), []byte("10")); err != nil {
		log.Fatal(err)
	}
	commit, err := db.Commit(batch)
	if err != nil {
		log.Fatal(err)
	}
	defer commit.Close()
	root, err := commit.Root()
	if err != nil {
		log.Fatal(err)
	}
	if err := commit.WaitDurable(); err != nil {
		log.Fatal(err)
	}

	// Read version 1 and prove the value against its root.
	snap, err := db.Snapshot(commit.Version())
	if err != nil {
		log.Fatal(err)
	}
	defer snap.Close()
	value, err := snap.Get([]byte("alice"))
	if err != nil {
		log.Fatal(err)
	}
	proof, err := snap.Prove([]byte("alice"))
	if err != nil {
		log.Fatal(err)
	}
	if err := verity.VerifyProof(root, []byte("alice"), value, proof); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("alice = %s, proven at version %d\n", value, snap.Version())
}
