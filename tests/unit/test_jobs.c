/* Unit tests of jobs.c (against a real redis-server this test starts) and
 * of dataset.c: the manifest, the split, images for URLs it lacks, and
 * deletion. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "blob.h"
#include "dataset.h"
#include "jobs.h"
#include "sha256.h"
#include "util.h"

static pid_t redis_pid;
static char url[64];

static int start_redis(void **state) {
    (void)state;
    int port = util_free_port();
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    redis_pid = fork();
    if (redis_pid == 0) {
        freopen("/dev/null", "w", stdout);
        execlp("redis-server", "redis-server", "--port", ps, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    char err[256];
    rstore *r = rstore_new(url, 500, err, sizeof err);
    rstore_set_retry_ms(r, 10000);
    ursa_err e = rstore_cmd(r, NULL, "PING");
    rstore_destroy(r);
    return e == URSA_OK ? 0 : -1;
}

static int stop_redis(void **state) {
    (void)state;
    kill(redis_pid, SIGTERM);
    waitpid(redis_pid, NULL, 0);
    return 0;
}

static rstore *conn(void) {
    char err[256];
    rstore *r = rstore_new(url, 1000, err, sizeof err);
    assert_non_null(r);
    assert_int_equal(rstore_cmd(r, NULL, "FLUSHALL"), URSA_OK);
    return r;
}

static void create_once(void **state) {
    (void)state;
    rstore *r = conn();
    char id[JOB_ID_MAX + 1];
    job_new_id(id);
    assert_true(job_id_valid(id));
    assert_int_equal(strlen(id), 16);
    int created = -1;
    const char spec[] = {1, 0, 2, 0, 3}; /* binary, with NULs */
    assert_int_equal(job_create(r, id, "train", "bears", "resnet34", spec, sizeof spec, &created), URSA_OK);
    assert_int_equal(created, 1);
    assert_int_equal(job_create(r, id, "lr_find", "x", "small", "", 0, &created), URSA_OK);
    assert_int_equal(created, 0); /* the first one stays */
    redisReply *rep;
    assert_int_equal(rstore_cmd(r, &rep, "HGET ursa:job:%s spec", id), URSA_OK);
    assert_int_equal(rep->len, sizeof spec);
    assert_memory_equal(rep->str, spec, sizeof spec);
    freeReplyObject(rep);
    assert_int_equal(rstore_cmd(r, &rep, "HGET ursa:job:%s kind", id), URSA_OK);
    assert_string_equal(rep->str, "train");
    freeReplyObject(rep);
    assert_int_equal(rstore_cmd(r, &rep, "ZSCORE ursa:jobs %s", id), URSA_OK);
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    freeReplyObject(rep);
    job_state s;
    assert_int_equal(job_get_state(r, id, &s), URSA_OK);
    assert_int_equal(s, JOB_QUEUED);
    assert_int_equal(job_get_state(r, "nope", &s), URSA_ERR_NOT_FOUND);
    rstore_destroy(r);
}

static void final_states_stay(void **state) {
    (void)state;
    rstore *r = conn();
    assert_int_equal(job_create(r, "j1", "train", "d", "small", "s", 1, NULL), URSA_OK);
    int moved = -1;
    const char *kv[] = {"worker", "w1", NULL};
    assert_int_equal(job_set_state(r, "j1", JOB_RUNNING, kv, &moved), URSA_OK);
    assert_int_equal(moved, 1);
    const char *kv2[] = {"model", "m1", "error_rate", "0.1", NULL};
    assert_int_equal(job_set_state(r, "j1", JOB_DONE, kv2, &moved), URSA_OK);
    assert_int_equal(moved, 1);
    const char *kv3[] = {"error", "late", NULL};
    assert_int_equal(job_set_state(r, "j1", JOB_FAILED, kv3, &moved), URSA_OK);
    assert_int_equal(moved, 0); /* a late worker cannot undo the end */
    assert_int_equal(job_update(r, "j1", kv3), URSA_OK);
    assert_int_equal(job_set_state(r, "j1", JOB_RUNNING, NULL, &moved), URSA_OK);
    assert_int_equal(moved, 0);
    job_state s;
    assert_int_equal(job_get_state(r, "j1", &s), URSA_OK);
    assert_int_equal(s, JOB_DONE);
    redisReply *rep;
    assert_int_equal(rstore_cmd(r, &rep, "HMGET ursa:job:j1 model error ended_ms worker"), URSA_OK);
    assert_string_equal(rep->element[0]->str, "m1");
    assert_int_equal(rep->element[1]->type, REDIS_REPLY_NIL);
    assert_true(atoll(rep->element[2]->str) > 0);
    assert_string_equal(rep->element[3]->str, "w1");
    freeReplyObject(rep);
    assert_int_equal(job_set_state(r, "unknown", JOB_RUNNING, NULL, &moved), URSA_ERR_NOT_FOUND);
    assert_int_equal(job_state_parse("cancelled"), JOB_CANCELLED);
    assert_int_equal(job_state_parse("bogus"), -1);
    assert_true(job_state_final(JOB_FAILED) && !job_state_final(JOB_RUNNING));
    rstore_destroy(r);
}

static void cancel(void **state) {
    (void)state;
    rstore *r = conn();
    job_state was, s;
    int ended = -1, got = 0;
    assert_int_equal(job_create(r, "q", "train", "d", "small", "s", 1, NULL), URSA_OK);
    assert_int_equal(job_cancel(r, "q", &was, &ended), URSA_OK);
    assert_int_equal(was, JOB_QUEUED);
    assert_int_equal(ended, 1);
    assert_int_equal(job_get_state(r, "q", &s), URSA_OK);
    assert_int_equal(s, JOB_CANCELLED); /* at once: no worker had it */
    assert_int_equal(job_create(r, "run", "train", "d", "small", "s", 1, NULL), URSA_OK);
    assert_int_equal(job_set_state(r, "run", JOB_RUNNING, NULL, NULL), URSA_OK);
    assert_int_equal(job_lease(r, "run", "w1", 5000, &got), URSA_OK);
    assert_int_equal(got, 1);
    assert_int_equal(job_cancel(r, "run", &was, &ended), URSA_OK);
    assert_int_equal(was, JOB_RUNNING);
    assert_int_equal(ended, 0);
    assert_int_equal(job_get_state(r, "run", &s), URSA_OK);
    assert_int_equal(s, JOB_RUNNING); /* its worker ends it */
    redisReply *rep;
    assert_int_equal(rstore_cmd(r, &rep, "HGET ursa:job:run cancel"), URSA_OK);
    assert_string_equal(rep->str, "1");
    freeReplyObject(rep);
    assert_int_equal(job_set_state(r, "run", JOB_DONE, NULL, NULL), URSA_OK);
    assert_int_equal(job_cancel(r, "run", &was, NULL), URSA_OK);
    assert_int_equal(was, JOB_DONE);
    assert_int_equal(job_cancel(r, "none", &was, NULL), URSA_ERR_NOT_FOUND);
    /* running, and nobody holds its lease (its worker died): at once */
    assert_int_equal(job_create(r, "orphan", "train", "d", "small", "s", 1, NULL), URSA_OK);
    assert_int_equal(job_set_state(r, "orphan", JOB_RUNNING, NULL, NULL), URSA_OK);
    assert_int_equal(job_cancel(r, "orphan", &was, &ended), URSA_OK);
    assert_int_equal(was, JOB_RUNNING);
    assert_int_equal(ended, 1);
    assert_int_equal(job_get_state(r, "orphan", &s), URSA_OK);
    assert_int_equal(s, JOB_CANCELLED);
    assert_int_equal(job_lease(r, "orphan", "w2", 5000, &got), URSA_OK);
    assert_int_equal(got, 1); /* the cancel let its lease go */
    rstore_destroy(r);
}

static void lease(void **state) {
    (void)state;
    rstore *r = conn();
    int got = -1;
    assert_int_equal(job_lease(r, "j", "A", 300, &got), URSA_OK);
    assert_int_equal(got, 1);
    assert_int_equal(job_lease(r, "j", "B", 300, &got), URSA_OK);
    assert_int_equal(got, 0);
    assert_int_equal(job_lease(r, "j", "A", 300, &got), URSA_OK); /* renewal */
    assert_int_equal(got, 1);
    assert_int_equal(job_lease_release(r, "j", "B"), URSA_OK); /* not B's to release */
    assert_int_equal(job_lease(r, "j", "B", 300, &got), URSA_OK);
    assert_int_equal(got, 0);
    assert_int_equal(job_lease_release(r, "j", "A"), URSA_OK);
    assert_int_equal(job_lease(r, "j", "B", 300, &got), URSA_OK);
    assert_int_equal(got, 1);
    util_sleep_ms(450); /* B stopped renewing: the lease lapses */
    assert_int_equal(job_lease(r, "j", "A", 300, &got), URSA_OK);
    assert_int_equal(got, 1);
    rstore_destroy(r);
}

static void model_id(void **state) {
    (void)state;
    char m[64];
    job_model_id("bears", "j0123", m, sizeof m);
    assert_string_equal(m, "bears-j0123");
    assert_false(job_id_valid(""));
    assert_false(job_id_valid("a b"));
    assert_false(job_id_valid("../x"));
    assert_false(job_id_valid("0123456789012345678901234567890123456789x"));
}

static void split_stable(void **state) {
    (void)state;
    char h[65];
    int n = 20000, in = 0, same = 0, other = 0;
    for (int i = 0; i < n; i++) {
        sha256_hex(&i, sizeof i, h);
        int v = ds_in_valid(h, 42, 0.2);
        in += v;
        same += v == ds_in_valid(h, 42, 0.2);
        other += v != ds_in_valid(h, 7, 0.2);
        if (v) assert_true(ds_in_valid(h, 42, 0.3)); /* a larger share only adds */
    }
    assert_int_equal(same, n);              /* the same image, the same side */
    assert_true(in > n * 0.18 && in < n * 0.22);
    assert_true(other > n * 0.25 && other < n * 0.39); /* another seed, another split */
}

static void manifest_text(void **state) {
    (void)state;
    ds_image im[3];
    memset(im, 0, sizeof im);
    for (int i = 0; i < 3; i++) {
        sha256_hex(&i, sizeof i, im[i].src);
        int j = i + 100;
        sha256_hex(&j, sizeof j, im[i].jpeg);
        snprintf(im[i].label, sizeof im[i].label, "label %d", i);
    }
    size_t len;
    char *tsv = ds_manifest_tsv(im, 3, &len);
    assert_non_null(tsv);
    ds_image *back;
    size_t n;
    assert_int_equal(ds_manifest_parse(tsv, len, &back, &n), URSA_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(back, im, sizeof im);
    free(back);
    tsv[10] = 'x'; /* not hex: a damaged snapshot is refused, not half read */
    assert_int_equal(ds_manifest_parse(tsv, len, &back, &n), URSA_ERR_CORRUPT);
    free(tsv);
}

/* Keys of a dataset in Redis (SCAN, pattern-escaped name not needed:
 * the names here are plain). */
static long dataset_keys(rstore *r, const char *ds) {
    long n = 0;
    char cursor[32] = "0";
    do {
        redisReply *rep = NULL;
        assert_int_equal(rstore_cmd(r, &rep, "SCAN %s MATCH ursa:ds:*%s* COUNT 1000", cursor, ds),
                         URSA_OK);
        snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
        n += (long)rep->element[1]->elements;
        freeReplyObject(rep);
    } while (strcmp(cursor, "0"));
    return n;
}

/* One URL in ds; its hash into hash. */
static void one_url(rstore *r, blob_store *bs, const char *ds, const char *u, char hash[65]) {
    const char *urls[] = {u}, *labels[] = {"cat"};
    int added = 0;
    assert_int_equal(ds_add_urls(r, bs, ds, 1, urls, labels, &added), URSA_OK);
    assert_int_equal(added, 1);
    ds_url_hash(u, hash);
}

/* An image for a URL the dataset lacks (deleted meanwhile) changes nothing:
 * its claim on the bytes is taken back, so no key is left behind. */
static void image_for_no_url_leaves_nothing(void **state) {
    (void)state;
    rstore *r = conn();
    char *dir = test_mkdtemp(), err[256], h[65], other[65];
    blob_store *bs = blob_store_new(dir, err, sizeof err);
    assert_non_null(bs);
    one_url(r, bs, "gone", "http://x.invalid/a.jpg", h);
    long before = dataset_keys(r, "gone");
    ds_url_hash("http://x.invalid/never-ingested.jpg", other);
    char src[65], jpeg[65];
    sha256_hex("source bytes", 12, src);
    sha256_hex("jpeg bytes", 10, jpeg);
    ds_op op = {.kind = DS_OP_IMAGE, .ds = "gone", .url_hash = other, .src_blob = src,
                .jpeg_blob = jpeg};
    assert_int_equal(ds_apply(r, &op, 1), URSA_OK);
    assert_int_equal(op.err, URSA_ERR_NOT_FOUND);
    assert_int_equal(dataset_keys(r, "gone"), before); /* no source bucket made */
    blob_store_destroy(bs);
    test_rmdir(dir);
    rstore_destroy(r);
}

/* ds_delete takes every key of a dataset whose name has the longest
 * length allowed, and no key of another. */
static void delete_a_long_name(void **state) {
    (void)state;
    rstore *r = conn();
    char *dir = test_mkdtemp(), err[256], h[65], name[DS_NAME_MAX + 1];
    blob_store *bs = blob_store_new(dir, err, sizeof err);
    assert_non_null(bs);
    memset(name, 'n', DS_NAME_MAX);
    name[DS_NAME_MAX] = '\0';
    assert_true(ds_name_valid(name));
    one_url(r, bs, name, "http://x.invalid/a.jpg", h);
    one_url(r, bs, "kept", "http://x.invalid/a.jpg", h);
    ds_op op = {.kind = DS_OP_STATE, .ds = name, .url_hash = h, .state = DS_FAILED,
                .reason = "http_404", .detail = ""};
    assert_int_equal(ds_apply(r, &op, 1), URSA_OK);
    assert_true(dataset_keys(r, name) >= 3);
    long kept = dataset_keys(r, "kept");
    long long removed = 0;
    assert_int_equal(ds_delete(r, name, &removed), URSA_OK);
    assert_true(removed >= 3);
    assert_int_equal(dataset_keys(r, name), 0);
    assert_int_equal(dataset_keys(r, "kept"), kept);
    int exists = 1;
    assert_int_equal(ds_exists(r, name, &exists), URSA_OK);
    assert_false(exists);
    blob_store_destroy(bs);
    test_rmdir(dir);
    rstore_destroy(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(create_once), cmocka_unit_test(final_states_stay),
        cmocka_unit_test(cancel),      cmocka_unit_test(lease),
        cmocka_unit_test(model_id),    cmocka_unit_test(split_stable),
        cmocka_unit_test(manifest_text),
        cmocka_unit_test(image_for_no_url_leaves_nothing),
        cmocka_unit_test(delete_a_long_name),
    };
    return cmocka_run_group_tests(tests, start_redis, stop_redis);
}
