/* Unit tests of blob_syncer.c and the local store's sync: puts come back
 * in order once stored, a put the disk refuses comes back with its bytes,
 * and destroy hands back what was never collected. */
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "blob_syncer.h"
#include "sha256.h"
#include "util.h"

typedef struct {
    int n, order[16];
    ursa_err err[16];
    size_t len[16];
} seen;

static void on_done(void *ctx, void *opaque, ursa_err err, void *data, size_t len) {
    seen *s = ctx;
    s->order[s->n] = (int)(intptr_t)opaque;
    s->err[s->n] = err;
    s->len[s->n] = len;
    s->n++;
    free(data);
}

static char *dup_str(const char *s) {
    char *p = malloc(strlen(s) + 1);
    memcpy(p, s, strlen(s) + 1);
    return p;
}

/* collects until n puts came back, for up to 5 s */
static void collect_n(blob_syncer *sy, seen *s, int n) {
    for (int i = 0; i < 500 && s->n < n; i++) {
        blob_syncer_collect(sy, on_done, s);
        if (s->n < n) util_sleep_ms(10);
    }
}

static void puts_come_back_stored_in_order(void **state) {
    (void)state;
    char *dir = test_mkdtemp();
    char err[256];
    blob_store *bs = blob_store_new(dir, err, sizeof err);
    blob_syncer *sy = blob_syncer_new(bs, err, sizeof err);
    assert_non_null(sy);
    const char *words[] = {"alpha", "beta", "gamma", "delta", "alpha"}; /* a repeat too */
    for (int i = 0; i < 5; i++)
        assert_int_equal(blob_syncer_put(sy, dup_str(words[i]), strlen(words[i]),
                                         (void *)(intptr_t)i),
                         URSA_OK);
    seen s = {0};
    collect_n(sy, &s, 5);
    assert_int_equal(s.n, 5);
    assert_int_equal(blob_syncer_pending(sy), 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(s.order[i], i);
        assert_int_equal(s.err[i], URSA_OK);
        assert_int_equal(s.len[i], strlen(words[i]));
        char key[65];
        sha256_hex(words[i], strlen(words[i]), key);
        assert_true(blob_exists(bs, key));
    }
    blob_syncer_stats st;
    blob_syncer_get_stats(sy, &st);
    assert_int_equal(st.puts, 5);
    assert_true(st.syncs >= 1);
    assert_int_equal(blob_syncer_failing(sy, NULL), URSA_OK);
    assert_int_equal(blob_store_sync(bs), URSA_OK); /* nothing left to sync */
    blob_syncer_destroy(sy, on_done, &s);
    assert_int_equal(s.n, 5);
    blob_store_destroy(bs);
    test_rmdir(dir);
}

static void a_refused_put_comes_back_with_its_bytes(void **state) {
    (void)state;
    char *dir = test_mkdtemp();
    char err[256];
    blob_store *bs = blob_store_new(dir, err, sizeof err);
    blob_store_set_reserve(bs, UINT64_MAX / 2); /* as if the disk were full */
    blob_syncer *sy = blob_syncer_new(bs, err, sizeof err);
    assert_int_equal(blob_syncer_put(sy, dup_str("full"), 4, (void *)7), URSA_OK);
    seen s = {0};
    collect_n(sy, &s, 1);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.order[0], 7);
    assert_int_equal(s.err[0], URSA_ERR_NO_SPACE);
    assert_int_equal(s.len[0], 4);
    blob_syncer_destroy(sy, on_done, &s);
    blob_store_destroy(bs);
    test_rmdir(dir);
}

static void destroy_hands_back_what_was_not_collected(void **state) {
    (void)state;
    char *dir = test_mkdtemp();
    char err[256];
    blob_store *bs = blob_store_new(dir, err, sizeof err);
    blob_syncer *sy = blob_syncer_new(bs, err, sizeof err);
    for (int i = 0; i < 3; i++)
        assert_int_equal(blob_syncer_put(sy, dup_str("x"), 1, (void *)(intptr_t)i), URSA_OK);
    seen s = {0};
    blob_syncer_destroy(sy, on_done, &s); /* each comes back once: stored or not tried */
    assert_int_equal(s.n, 3);
    for (int i = 0; i < 3; i++)
        assert_true(s.err[i] == URSA_OK || s.err[i] == URSA_ERR_SHUTDOWN);
    blob_store_destroy(bs);
    test_rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(puts_come_back_stored_in_order),
        cmocka_unit_test(a_refused_put_comes_back_with_its_bytes),
        cmocka_unit_test(destroy_hands_back_what_was_not_collected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
