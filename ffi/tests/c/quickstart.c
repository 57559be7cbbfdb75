#include <stdio.h>
#include <stdlib.h>

#include "verity.h"

/* Exits with the message of a failed call. */
static void check(verity_status status, verity_error *err)
{
    if (status != VERITY_OK) {
        fprintf(stderr, "verity: %s\n", verity_error_message(err));
        verity_error_free(err);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "quickstart-db";
    const uint8_t *key = (const uint8_t *)"alice";
    verity_error *err = NULL;
    verity_db *db = NULL;
    check(verity_open(dir, NULL, &db, &err), err);

    /* Stage version 1: verity_commit returns at once, the root and the
     * sync follow in the background. */
    verity_batch *batch = verity_batch_new();
    check(verity_batch_put(batch, key, 5, (const uint8_t *)"10", 2, &err), err);
    struct verity_commit *commit = NULL;
    check(verity_commit(db, batch, &commit, &err), err);
    uint8_t root[32];
    check(verity_commit_root(commit, root, &err), err);
    check(verity_commit_wait_durable(commit, &err), err);

    /* Read version 1 and prove the value against its root. */
    verity_snapshot *snap = NULL;
    check(verity_snapshot_open(db, verity_commit_version(commit), &snap, &err), err);
    verity_bytes value, proof;
    check(verity_snapshot_get(snap, key, 5, &value, &err), err);
    check(verity_snapshot_prove(snap, key, 5, &proof, &err), err);
    check(verity_verify_proof(root, key, 5, value.ptr, value.len, proof.ptr, proof.len, &err), err);
    printf("alice = %.*s, proven at version %llu\n", (int)value.len, (const char *)value.ptr,
           (unsigned long long)verity_snapshot_version(snap));

    verity_bytes_free(proof);
    verity_bytes_free(value);
    verity_snapshot_free(snap);
    verity_commit_free(commit);
    verity_batch_free(batch);
    verity_close(db);
    return 0;
}
