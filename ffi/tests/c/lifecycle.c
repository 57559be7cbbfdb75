/*
 * The C ABI end to end, as a C node would use it: open, several commits in
 * flight, roots and durable waits, snapshots at old and new versions,
 * reads, proofs (single, multi, range) verified and tampered ones refused,
 * iteration, prune, busy and closed handles, reopen; then every bad input
 * the header promises to refuse.
 *
 * Usage: lifecycle DIR (an empty directory for the store). Exits 0 when
 * every check passes; prints each failed check with its line.
 * Built with -std=c99 -Wall -Wextra -Werror by tests/c_programs.rs, and
 * under -fsanitize=address,undefined by .ci/run.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verity.h"

static int passed = 0;
static int failed = 0;

#define CHECK(cond)                                                     \
    do {                                                                \
        if (cond) {                                                     \
            passed++;                                                   \
        } else {                                                        \
            failed++;                                                   \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,      \
                    __LINE__, #cond);                                   \
        }                                                               \
    } while (0)

/* Checks the status of a call; on an unexpected one prints the message. */
#define EXPECT(want, call)                                              \
    do {                                                                \
        verity_error *e_ = NULL;                                        \
        verity_error **ep_ = &e_;                                       \
        verity_status got_ = (call);                                    \
        if (got_ == (want)) {                                           \
            passed++;                                                   \
        } else {                                                        \
            failed++;                                                   \
            fprintf(stderr, "%s:%d: %s gave %d, not %d: %s\n",          \
                    __FILE__, __LINE__, #call, (int)got_, (int)(want),  \
                    verity_error_message(e_));                          \
        }                                                               \
        /* err is set exactly on failure */                             \
        CHECK((e_ != NULL) ==                                           \
              (got_ != VERITY_OK && got_ != VERITY_NOT_FOUND));         \
        if (e_ != NULL) {                                               \
            CHECK(verity_error_code(e_) == got_);                       \
            CHECK(strlen(verity_error_message(e_)) > 0);                \
        }                                                               \
        verity_error_free(e_);                                          \
        (void)ep_;                                                      \
    } while (0)

/* `ERR` is the error out-parameter inside EXPECT. */
#define ERR ep_

/* A string literal as (bytes, length). */
#define LIT(s) ((const uint8_t *)(s)), (sizeof(s) - 1)

static int bytes_equal(verity_bytes b, const char *want)
{
    size_t n = strlen(want);
    return b.len == n && (n == 0 || memcmp(b.ptr, want, n) == 0);
}

#define VERSIONS 6
#define KEYS 200

static void key_of(int i, char *buf, size_t cap)
{
    snprintf(buf, cap, "account-%04d", i);
}

static void value_of(int i, int version, char *buf, size_t cap)
{
    snprintf(buf, cap, "balance-%d-at-%d", i * 7, version);
}

/* Counts the entries of a snapshot by iteration, checking each value. */
static int count_entries(const verity_snapshot *s, int version)
{
    verity_iter *it = NULL;
    int n = 0;
    EXPECT(VERITY_OK, verity_iter_open(s, NULL, &it, ERR));
    for (;;) {
        verity_bytes key = {NULL, 0};
        verity_bytes value = {NULL, 0};
        uint8_t key_hash[32];
        uint8_t want_hash[32];
        verity_status st = verity_iter_next(it, &key, &value, key_hash, NULL);
        if (st == VERITY_NOT_FOUND) {
            CHECK(key.ptr == NULL && value.ptr == NULL);
            break;
        }
        CHECK(st == VERITY_OK);
        if (st != VERITY_OK) {
            break;
        }
        CHECK(verity_key_hash(key.ptr, key.len, want_hash) == VERITY_OK);
        CHECK(memcmp(key_hash, want_hash, 32) == 0);
        {
            char text[64];
            char want[64];
            int i;
            size_t len = key.len < sizeof text - 1 ? key.len : sizeof text - 1;
            memcpy(text, key.ptr, len);
            text[len] = '\0';
            i = atoi(text + strlen("account-"));
            int written = version;
            /* Odd keys were last written at version 1, even ones at each. */
            if (i % 2 == 1) {
                written = 1;
            }
            value_of(i, written, want, sizeof want);
            CHECK(bytes_equal(value, want));
        }
        verity_bytes_free(key);
        verity_bytes_free(value);
        n++;
    }
    /* Past the end it stays at the end. */
    {
        verity_bytes key, value;
        EXPECT(VERITY_NOT_FOUND, verity_iter_next(it, &key, &value, NULL, ERR));
    }
    verity_iter_free(it);
    return n;
}

/* Walks the whole state by range proofs of `limit` entries, verifying each
 * against `root`; returns the number of entries seen. */
static int sync_by_ranges(const verity_snapshot *s, const uint8_t root[32], size_t limit)
{
    uint8_t from[32];
    int total = 0;
    int rounds = 0;
    memset(from, 0, sizeof from);
    for (;;) {
        verity_bytes entries = {NULL, 0};
        verity_bytes proof = {NULL, 0};
        uint8_t to[32];
        size_t i;
        int at_end = 1;
        EXPECT(VERITY_OK, verity_snapshot_prove_range(s, from, limit, &entries, &proof, ERR));
        CHECK(entries.len % 64 == 0);
        EXPECT(VERITY_OK, verity_verify_range_proof(root, from, entries.ptr, entries.len,
                                                    proof.ptr, proof.len, to, ERR));
        if (entries.len >= 64) {
            /* One entry left out: the proof no longer matches. */
            EXPECT(VERITY_PROOF_INVALID,
                   verity_verify_range_proof(root, from, entries.ptr + 64, entries.len - 64,
                                             proof.ptr, proof.len, NULL, ERR));
        }
        total += (int)(entries.len / 64);
        verity_bytes_free(entries);
        verity_bytes_free(proof);
        for (i = 0; i < 32; i++) {
            if (to[i] != 0xff) {
                at_end = 0;
            }
        }
        if (at_end || ++rounds > 1000) {
            break;
        }
        /* Continue right after `to`. */
        memcpy(from, to, 32);
        for (i = 32; i-- > 0;) {
            if (++from[i] != 0) {
                break;
            }
        }
    }
    return total;
}

static void lifecycle(const char *dir)
{
    verity_options *opts = verity_options_new();
    verity_db *db = NULL;
    verity_db *second = NULL;
    struct verity_commit *commits[VERSIONS];
    uint8_t roots[VERSIONS][32];
    verity_snapshot *old_snap = NULL;
    verity_snapshot *new_snap = NULL;
    verity_snapshot *snap = NULL;
    verity_iter *it = NULL;
    verity_bytes value = {NULL, 0};
    verity_bytes proof = {NULL, 0};
    verity_stats stats;
    uint64_t latest = 99;
    uint8_t root[32];
    char key[64], want[64];
    int v, i;

    CHECK(opts != NULL);
    verity_options_set_cache_bytes(opts, 8u << 20);
    verity_options_set_retain_versions(opts, 0);
    verity_options_set_sync(opts, 0);
    EXPECT(VERITY_OK, verity_open(dir, opts, &db, ERR));
    verity_options_free(opts);
    CHECK(db != NULL);
    if (db == NULL) {
        return;
    }
    EXPECT(VERITY_OK, verity_latest_version(db, &latest, ERR));
    CHECK(latest == 0);

    /* A second open of the same store is refused while the first lives. */
    EXPECT(VERITY_BUSY, verity_open(dir, NULL, &second, ERR));
    CHECK(second == NULL);

    /* Several commits in flight: stage them all, then wait. Every key at
     * version 1; even keys rewritten at each later version; key 0 deleted
     * at version 3 and written again at version 5. */
    for (v = 1; v <= VERSIONS; v++) {
        verity_batch *b = verity_batch_new();
        CHECK(b != NULL);
        for (i = 0; i < KEYS; i++) {
            if (v > 1 && i % 2 == 1) {
                continue;
            }
            key_of(i, key, sizeof key);
            if (i == 0 && (v == 3 || v == 4)) {
                if (v == 3) {
                    EXPECT(VERITY_OK, verity_batch_delete(b, (const uint8_t *)key, strlen(key), ERR));
                }
                continue;
            }
            value_of(i, v, want, sizeof want);
            EXPECT(VERITY_OK, verity_batch_put(b, (const uint8_t *)key, strlen(key),
                                               (const uint8_t *)want, strlen(want), ERR));
        }
        CHECK(verity_batch_len(b) > 0);
        commits[v - 1] = NULL;
        EXPECT(VERITY_OK, verity_commit(db, b, &commits[v - 1], ERR));
        CHECK(commits[v - 1] != NULL);
        CHECK(verity_batch_len(b) == 0); /* emptied, still ours */
        CHECK(verity_commit_version(commits[v - 1]) == (uint64_t)v);
        verity_batch_free(b);
    }
    for (v = 1; v <= VERSIONS; v++) {
        EXPECT(VERITY_OK, verity_commit_root(commits[v - 1], roots[v - 1], ERR));
        EXPECT(VERITY_OK, verity_commit_wait_durable(commits[v - 1], ERR));
    }
    CHECK(memcmp(roots[0], roots[1], 32) != 0);
    EXPECT(VERITY_OK, verity_latest_version(db, &latest, ERR));
    CHECK(latest == VERSIONS);

    /* Snapshots at an old and at the newest version. */
    EXPECT(VERITY_OK, verity_snapshot_open(db, 1, &old_snap, ERR));
    EXPECT(VERITY_OK, verity_snapshot_open(db, VERSIONS, &new_snap, ERR));
    CHECK(verity_snapshot_version(old_snap) == 1);
    CHECK(verity_snapshot_version(new_snap) == VERSIONS);
    EXPECT(VERITY_OK, verity_snapshot_root(old_snap, root, ERR));
    CHECK(memcmp(root, roots[0], 32) == 0);
    EXPECT(VERITY_OK, verity_snapshot_root(new_snap, root, ERR));
    CHECK(memcmp(root, roots[VERSIONS - 1], 32) == 0);

    key_of(2, key, sizeof key);
    EXPECT(VERITY_OK, verity_snapshot_get(old_snap, (const uint8_t *)key, strlen(key), &value, ERR));
    value_of(2, 1, want, sizeof want);
    CHECK(bytes_equal(value, want));
    verity_bytes_free(value);
    EXPECT(VERITY_OK, verity_snapshot_get(new_snap, (const uint8_t *)key, strlen(key), &value, ERR));
    value_of(2, VERSIONS, want, sizeof want);
    CHECK(bytes_equal(value, want));
    verity_bytes_free(value);
    EXPECT(VERITY_NOT_FOUND, verity_snapshot_get(new_snap, LIT("nobody"), &value, ERR));
    CHECK(value.ptr == NULL && value.len == 0);

    /* Key 0 is absent at version 3 and back at version 5. */
    EXPECT(VERITY_OK, verity_snapshot_open(db, 3, &snap, ERR));
    key_of(0, key, sizeof key);
    EXPECT(VERITY_NOT_FOUND, verity_snapshot_get(snap, (const uint8_t *)key, strlen(key), &value, ERR));
    /* ... and proven absent there. */
    EXPECT(VERITY_OK, verity_snapshot_prove(snap, (const uint8_t *)key, strlen(key), &proof, ERR));
    EXPECT(VERITY_OK, verity_verify_proof(roots[2], (const uint8_t *)key, strlen(key), NULL, 0,
                                          proof.ptr, proof.len, ERR));
    value_of(0, 1, want, sizeof want);
    EXPECT(VERITY_PROOF_INVALID,
           verity_verify_proof(roots[2], (const uint8_t *)key, strlen(key), (const uint8_t *)want,
                               strlen(want), proof.ptr, proof.len, ERR));
    verity_bytes_free(proof);
    verity_snapshot_free(snap);
    snap = NULL;

    /* Proofs: present, verified; wrong value, wrong root and tampered
     * bytes refused. */
    key_of(4, key, sizeof key);
    value_of(4, VERSIONS, want, sizeof want);
    EXPECT(VERITY_OK, verity_snapshot_prove(new_snap, (const uint8_t *)key, strlen(key), &proof, ERR));
    CHECK(proof.len > 0);
    EXPECT(VERITY_OK, verity_verify_proof(roots[VERSIONS - 1], (const uint8_t *)key, strlen(key),
                                          (const uint8_t *)want, strlen(want), proof.ptr, proof.len, ERR));
    EXPECT(VERITY_PROOF_INVALID,
           verity_verify_proof(roots[VERSIONS - 1], (const uint8_t *)key, strlen(key), LIT("forged"),
                               proof.ptr, proof.len, ERR));
    EXPECT(VERITY_PROOF_INVALID,
           verity_verify_proof(roots[0], (const uint8_t *)key, strlen(key), (const uint8_t *)want,
                               strlen(want), proof.ptr, proof.len, ERR));
    {
        size_t at;
        int refused = 1;
        uint8_t *copy = malloc(proof.len);
        CHECK(copy != NULL);
        /* Every single flipped bit is refused. */
        for (at = 0; copy != NULL && at < proof.len; at++) {
            memcpy(copy, proof.ptr, proof.len);
            copy[at] ^= 0x01;
            if (verity_verify_proof(roots[VERSIONS - 1], (const uint8_t *)key, strlen(key),
                                    (const uint8_t *)want, strlen(want), copy, proof.len, NULL)
                != VERITY_PROOF_INVALID) {
                refused = 0;
                fprintf(stderr, "a proof with byte %zu flipped was not refused\n", at);
            }
        }
        CHECK(refused);
        /* Cut short, or with bytes added. */
        EXPECT(VERITY_PROOF_INVALID,
               verity_verify_proof(roots[VERSIONS - 1], (const uint8_t *)key, strlen(key),
                                   (const uint8_t *)want, strlen(want), proof.ptr, proof.len / 2, ERR));
        free(copy);
    }
    verity_bytes_free(proof);

    /* The old version proves its own value against its own root. */
    value_of(4, 1, want, sizeof want);
    EXPECT(VERITY_OK, verity_snapshot_prove(old_snap, (const uint8_t *)key, strlen(key), &proof, ERR));
    EXPECT(VERITY_OK, verity_verify_proof(roots[0], (const uint8_t *)key, strlen(key),
                                          (const uint8_t *)want, strlen(want), proof.ptr, proof.len, ERR));
    verity_bytes_free(proof);

    /* Batched reads and a multiproof. */
    {
        char k1[64], k2[64], v1[64];
        verity_slice keys[3];
        verity_bytes values[3];
        uint8_t found[3];
        verity_claim claims[3];
        key_of(1, k1, sizeof k1);
        key_of(6, k2, sizeof k2);
        keys[0].ptr = (const uint8_t *)k1;
        keys[0].len = strlen(k1);
        keys[1].ptr = (const uint8_t *)"missing";
        keys[1].len = 7;
        keys[2].ptr = (const uint8_t *)k2;
        keys[2].len = strlen(k2);
        EXPECT(VERITY_OK, verity_snapshot_get_many(new_snap, keys, 3, values, found, ERR));
        CHECK(found[0] == 1 && found[1] == 0 && found[2] == 1);
        value_of(1, 1, v1, sizeof v1);
        CHECK(bytes_equal(values[0], v1));
        CHECK(values[1].ptr == NULL);
        value_of(6, VERSIONS, want, sizeof want);
        CHECK(bytes_equal(values[2], want));

        EXPECT(VERITY_OK, verity_snapshot_prove_many(new_snap, keys, 3, &proof, ERR));
        for (i = 0; i < 3; i++) {
            claims[i].key = keys[i].ptr;
            claims[i].key_len = keys[i].len;
            claims[i].value = found[i] ? (values[i].ptr != NULL ? values[i].ptr : (const uint8_t *)"") : NULL;
            claims[i].value_len = values[i].len;
        }
        EXPECT(VERITY_OK, verity_verify_multiproof(roots[VERSIONS - 1], claims, 3, proof.ptr, proof.len, ERR));
        claims[1].value = (const uint8_t *)"x";
        claims[1].value_len = 1;
        EXPECT(VERITY_PROOF_INVALID,
               verity_verify_multiproof(roots[VERSIONS - 1], claims, 3, proof.ptr, proof.len, ERR));
        /* Two claims on one key that disagree are not a question. */
        claims[1] = claims[0];
        claims[1].value = NULL;
        claims[1].value_len = 0;
        EXPECT(VERITY_INVALID_ARGUMENT,
               verity_verify_multiproof(roots[VERSIONS - 1], claims, 3, proof.ptr, proof.len, ERR));
        verity_bytes_free(proof);
        for (i = 0; i < 3; i++) {
            verity_bytes_free(values[i]);
        }
    }

    /* Iteration and range proofs see every entry exactly once. */
    CHECK(count_entries(new_snap, VERSIONS) == KEYS);
    CHECK(sync_by_ranges(new_snap, roots[VERSIONS - 1], 64) == KEYS);
    CHECK(sync_by_ranges(new_snap, roots[VERSIONS - 1], 1000) == KEYS);

    EXPECT(VERITY_OK, verity_db_stats(db, &stats, ERR));
    CHECK(stats.latest_staged == VERSIONS);
    CHECK(stats.latest_durable == VERSIONS);
    CHECK(stats.oldest_retained == 0);

    /* Prune: old versions go, and what is asked of them says so. */
    EXPECT(VERITY_INVALID_ARGUMENT, verity_prune(db, VERSIONS + 5, ERR));
    EXPECT(VERITY_OK, verity_prune(db, 3, ERR));
    EXPECT(VERITY_VERSION_PRUNED, verity_snapshot_open(db, 1, &snap, ERR));
    CHECK(snap == NULL);
    EXPECT(VERITY_VERSION_UNKNOWN, verity_snapshot_open(db, VERSIONS + 1, &snap, ERR));
    EXPECT(VERITY_OK, verity_db_stats(db, &stats, ERR));
    CHECK(stats.oldest_retained == 3);
    {
        /* A snapshot opened before the prune reads its version or says it
         * is gone; never something else. */
        verity_status st;
        key_of(2, key, sizeof key);
        st = verity_snapshot_get(old_snap, (const uint8_t *)key, strlen(key), &value, NULL);
        CHECK(st == VERITY_OK || st == VERITY_VERSION_PRUNED);
        verity_bytes_free(value);
    }

    /* Close: handles made from the database answer VERITY_CLOSED, and stay
     * valid to free. */
    EXPECT(VERITY_OK, verity_iter_open(new_snap, NULL, &it, ERR));
    verity_close(db);
    db = NULL;
    key_of(2, key, sizeof key);
    EXPECT(VERITY_CLOSED, verity_snapshot_get(new_snap, (const uint8_t *)key, strlen(key), &value, ERR));
    EXPECT(VERITY_CLOSED, verity_snapshot_root(new_snap, root, ERR));
    EXPECT(VERITY_CLOSED, verity_snapshot_prove(new_snap, (const uint8_t *)key, strlen(key), &proof, ERR));
    EXPECT(VERITY_CLOSED, verity_commit_root(commits[0], root, ERR));
    EXPECT(VERITY_CLOSED, verity_commit_wait_durable(commits[0], ERR));
    CHECK(verity_commit_version(commits[0]) == 1);
    {
        verity_bytes k, val;
        EXPECT(VERITY_CLOSED, verity_iter_next(it, &k, &val, NULL, ERR));
    }
    verity_iter_free(it);
    verity_snapshot_free(old_snap);
    for (v = 1; v <= VERSIONS; v++) {
        verity_commit_free(commits[v - 1]);
    }

    /* Reopen, while one snapshot of the closed database is still held. */
    EXPECT(VERITY_OK, verity_open(dir, NULL, &db, ERR));
    verity_snapshot_free(new_snap);
    EXPECT(VERITY_OK, verity_latest_version(db, &latest, ERR));
    CHECK(latest == VERSIONS);
    EXPECT(VERITY_OK, verity_snapshot_open(db, VERSIONS, &snap, ERR));
    EXPECT(VERITY_OK, verity_snapshot_root(snap, root, ERR));
    CHECK(memcmp(root, roots[VERSIONS - 1], 32) == 0);
    key_of(0, key, sizeof key);
    EXPECT(VERITY_OK, verity_snapshot_get(snap, (const uint8_t *)key, strlen(key), &value, ERR));
    value_of(0, VERSIONS, want, sizeof want);
    CHECK(bytes_equal(value, want));
    verity_bytes_free(value);
    EXPECT(VERITY_VERSION_PRUNED, verity_snapshot_open(db, 2, &old_snap, ERR));
    verity_snapshot_free(snap);
    verity_close(db);
}

static void bad_inputs(const char *dir)
{
    verity_db *db = NULL;
    verity_batch *b = verity_batch_new();
    struct verity_commit *c = NULL;
    verity_snapshot *s = NULL;
    verity_iter *it = NULL;
    verity_bytes out = {NULL, 0};
    verity_bytes out2 = {NULL, 0};
    verity_bytes outs[2];
    uint8_t found[2];
    uint8_t root[32];
    uint64_t n = 0;
    verity_stats stats;
    size_t big_len = VERITY_MAX_VALUE_LEN + 1;
    uint8_t *big = calloc(big_len, 1);
    verity_error *err = NULL;
    verity_slice null_key = {NULL, 3};
    verity_slice empty[1];

    CHECK(big != NULL);
    if (big == NULL) {
        return;
    }
    memset(root, 0, sizeof root);

    /* Opening. */
    EXPECT(VERITY_INVALID_ARGUMENT, verity_open(NULL, NULL, &db, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_open("", NULL, &db, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_open("/tmp/\xff\xfe-not-utf8", NULL, &db, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_open(dir, NULL, NULL, ERR));
    CHECK(db == NULL);
    EXPECT(VERITY_OK, verity_open(dir, NULL, &db, ERR));

    /* err is optional and untouched on success. */
    CHECK(verity_batch_put(NULL, LIT("k"), LIT("v"), NULL) == VERITY_INVALID_ARGUMENT);
    CHECK(verity_batch_put(b, LIT("k"), LIT("v"), &err) == VERITY_OK);
    CHECK(err == NULL);

    /* Batches: NULL handle, NULL key, NULL with a length, empty and
     * oversized keys, oversized values. The batch is unchanged by each. */
    EXPECT(VERITY_INVALID_ARGUMENT, verity_batch_put(NULL, LIT("k"), LIT("v"), ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_batch_put(b, NULL, 0, LIT("v"), ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_batch_put(b, NULL, 4, LIT("v"), ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_batch_put(b, big, 0, LIT("v"), ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_batch_put(b, LIT("k"), NULL, 9, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_batch_put(b, big, VERITY_MAX_KEY_LEN + 1, LIT("v"), ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_batch_put(b, LIT("k"), big, big_len, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_batch_delete(NULL, LIT("k"), ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_batch_delete(b, NULL, 1, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_batch_delete(b, big, VERITY_MAX_KEY_LEN + 1, ERR));
    CHECK(verity_batch_len(b) == 1);
    CHECK(verity_batch_len(NULL) == 0);
    /* The limits themselves are taken; an empty value too. */
    EXPECT(VERITY_OK, verity_batch_put(b, big, VERITY_MAX_KEY_LEN, big, 1024, ERR));
    EXPECT(VERITY_OK, verity_batch_put(b, LIT("empty"), NULL, 0, ERR));

    /* Committing. */
    EXPECT(VERITY_INVALID_ARGUMENT, verity_commit(NULL, b, &c, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_commit(db, NULL, &c, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_commit(db, b, NULL, ERR));
    CHECK(verity_batch_len(b) == 3);
    EXPECT(VERITY_OK, verity_commit(db, b, &c, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_commit_root(NULL, root, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_commit_root(c, NULL, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_commit_wait_durable(NULL, ERR));
    CHECK(verity_commit_version(NULL) == 0);
    EXPECT(VERITY_OK, verity_commit_wait_durable(c, ERR));

    /* The database. */
    EXPECT(VERITY_INVALID_ARGUMENT, verity_latest_version(NULL, &n, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_latest_version(db, NULL, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_prune(NULL, 1, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_db_stats(NULL, &stats, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_db_stats(db, NULL, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_open(NULL, 1, &s, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_open(db, 1, NULL, ERR));
    EXPECT(VERITY_VERSION_UNKNOWN, verity_snapshot_open(db, UINT64_MAX, &s, ERR));
    EXPECT(VERITY_OK, verity_snapshot_open(db, 1, &s, ERR));

    /* Snapshots. */
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_get(NULL, LIT("k"), &out, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_get(s, NULL, 0, &out, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_get(s, NULL, 1, &out, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_get(s, LIT("k"), NULL, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_get(s, big, VERITY_MAX_KEY_LEN + 1, &out, ERR));
    EXPECT(VERITY_OK, verity_snapshot_get(s, big, VERITY_MAX_KEY_LEN, &out, ERR));
    CHECK(out.len == 1024);
    verity_bytes_free(out);
    EXPECT(VERITY_OK, verity_snapshot_get(s, LIT("empty"), &out, ERR));
    CHECK(out.ptr == NULL && out.len == 0);
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_root(NULL, root, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_root(s, NULL, ERR));
    CHECK(verity_snapshot_version(NULL) == 0);
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_prove(NULL, LIT("k"), &out, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_prove(s, NULL, 2, &out, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_prove(s, LIT("k"), NULL, ERR));
    empty[0].ptr = (const uint8_t *)"k";
    empty[0].len = 0;
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_get_many(s, NULL, 2, outs, found, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_get_many(s, &null_key, 1, outs, found, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_get_many(s, empty, 1, outs, found, ERR));
    CHECK(outs[0].ptr == NULL && found[0] == 0);
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_get_many(s, empty, 1, NULL, found, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_get_many(NULL, empty, 1, outs, found, ERR));
    EXPECT(VERITY_OK, verity_snapshot_get_many(s, NULL, 0, NULL, NULL, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_prove_many(s, &null_key, 1, &out, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_prove_range(s, NULL, 10, &out, &out2, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_prove_range(s, root, 0, &out, &out2, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_snapshot_prove_range(s, root, 10, NULL, &out2, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_iter_open(NULL, NULL, &it, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_iter_open(s, NULL, NULL, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_iter_next(NULL, &out, &out2, NULL, ERR));
    EXPECT(VERITY_OK, verity_iter_open(s, NULL, &it, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_iter_next(it, NULL, &out2, NULL, ERR));

    /* Verification. */
    EXPECT(VERITY_OK, verity_snapshot_prove(s, LIT("k"), &out, ERR));
    EXPECT(VERITY_OK, verity_snapshot_root(s, root, ERR));
    EXPECT(VERITY_OK, verity_verify_proof(root, LIT("k"), LIT("v"), out.ptr, out.len, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_verify_proof(NULL, LIT("k"), LIT("v"), out.ptr, out.len, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_verify_proof(root, NULL, 1, LIT("v"), out.ptr, out.len, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_verify_proof(root, LIT("k"), NULL, 1, out.ptr, out.len, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_verify_proof(root, LIT("k"), LIT("v"), NULL, 5, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_verify_proof(root, LIT("k"), LIT("v"), NULL, 0, ERR));
    EXPECT(VERITY_PROOF_INVALID, verity_verify_proof(root, LIT("k"), LIT("v"), LIT("garbage"), ERR));
    EXPECT(VERITY_PROOF_INVALID, verity_verify_proof(root, LIT("k"), LIT("v"), out.ptr, 0, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT, verity_verify_multiproof(root, NULL, 1, out.ptr, out.len, ERR));
    EXPECT(VERITY_INVALID_ARGUMENT,
           verity_verify_range_proof(root, root, big, 63, out.ptr, out.len, NULL, ERR));
    EXPECT(VERITY_PROOF_INVALID,
           verity_verify_range_proof(root, root, NULL, 0, out.ptr, out.len, NULL, ERR));
    CHECK(verity_key_hash(NULL, 1, root) == VERITY_INVALID_ARGUMENT);
    CHECK(verity_key_hash(LIT("k"), NULL) == VERITY_INVALID_ARGUMENT);
    CHECK(verity_value_hash(NULL, 0, root) == VERITY_OK);
    CHECK(verity_value_hash(NULL, 2, root) == VERITY_INVALID_ARGUMENT);
    verity_bytes_free(out);

    /* Errors and releases take NULL. */
    CHECK(verity_error_code(NULL) == VERITY_INVALID_ARGUMENT);
    CHECK(strcmp(verity_error_message(NULL), "") == 0);
    verity_error_free(NULL);
    verity_bytes_free(out2);
    {
        verity_bytes none = {NULL, 0};
        verity_bytes_free(none);
    }
    verity_options_set_cache_bytes(NULL, 1);
    verity_options_set_retain_versions(NULL, 1);
    verity_options_set_sync(NULL, 1);
    verity_options_free(NULL);
    verity_batch_free(NULL);
    verity_commit_free(NULL);
    verity_snapshot_free(NULL);
    verity_iter_free(NULL);
    verity_close(NULL);

    verity_iter_free(it);
    verity_snapshot_free(s);
    verity_commit_free(c);
    verity_batch_free(b);
    verity_close(db);
    free(big);
}

int main(int argc, char **argv)
{
    char sub[4096];
    uint32_t abi = verity_abi_version();
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    CHECK(abi >> 16 == VERITY_ABI_MAJOR);
    CHECK((abi & 0xffff) >= VERITY_ABI_MINOR);

    snprintf(sub, sizeof sub, "%s/lifecycle", argv[1]);
    lifecycle(sub);
    snprintf(sub, sizeof sub, "%s/bad-inputs", argv[1]);
    bad_inputs(sub);

    printf("c lifecycle: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
