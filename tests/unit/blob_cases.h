/* blob_cases.h: cases every blob store backend must pass, included by
 * test_blob.c (the directory) and test_blob_s3.c (a real S3 gateway). */
#ifndef URSA_TEST_BLOB_CASES_H
#define URSA_TEST_BLOB_CASES_H

#include "test.h"
#include "blob.h"
#include "util.h"

/* blob_list finds the store's blobs with size and time, and nothing else;
 * a put of a blob that exists makes it newer (ursa gc's grace) */
typedef struct {
    char keys[8][65];
    uint64_t sizes[8];
    int64_t ms[8];
    int n, others;
} seen_list;

static inline int on_listed(void *ctx, const char *key, uint64_t size, int64_t ms) {
    seen_list *s = ctx;
    if (s->n < 8 && (!strcmp(key, s->keys[0]) || !strcmp(key, s->keys[1]))) {
        int i = !strcmp(key, s->keys[0]) ? 0 : 1;
        s->sizes[i] = size, s->ms[i] = ms;
        s->n++;
    } else {
        s->others++;
    }
    return 0;
}

/* Returns how many other blobs the listing had. */
static inline int list_and_times(blob_store *bs, int64_t clock_slack_ms) {
    seen_list s = {.n = 0};
    assert_int_equal(blob_put(bs, "listed one", 10, s.keys[0]), URSA_OK);
    assert_int_equal(blob_put(bs, "listed two!", 11, s.keys[1]), URSA_OK);
    int64_t t0 = 0;
    assert_int_equal(blob_mtime(bs, s.keys[0], &t0), URSA_OK);
    int64_t now = util_now_ms();
    assert_true(t0 > now - 60000 - clock_slack_ms && t0 < now + clock_slack_ms);
    assert_int_equal(blob_list(bs, on_listed, &s), URSA_OK);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.sizes[0], 10);
    assert_int_equal(s.sizes[1], 11);
    assert_true(s.ms[0] == t0);
    const char *absent = "0000000000000000000000000000000000000000000000000000000000000000";
    int64_t t = 0;
    assert_int_equal(blob_mtime(bs, absent, &t), URSA_ERR_NOT_FOUND);
    util_sleep_ms(1100); /* S3's LastModified has seconds */
    char again[65];
    assert_int_equal(blob_put(bs, "listed one", 10, again), URSA_OK);
    assert_int_equal(blob_mtime(bs, s.keys[0], &t), URSA_OK);
    if (t <= t0) fail_msg("a put of a blob that exists left its time at %lld (was %lld)",
                          (long long)t, (long long)t0);
    assert_int_equal(blob_delete(bs, s.keys[0]), URSA_OK);
    assert_int_equal(blob_delete(bs, s.keys[1]), URSA_OK);
    return s.others;
}

#endif
