/* Tests of blob_s3.c against a real S3 server: a one-node Ceph cluster with
 * its RADOS Gateway, started by ops/s3-server.sh ($URSA_S3_SERVER) for this
 * run and stopped after it. Content addressing, no-op puts, the integrity
 * check on an object changed behind the store's back, background uploads
 * with group commit, start-up errors that name their cause, and a gateway
 * outage that is backpressure and loses nothing. */
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "blob.h"
#include "blob_cases.h"
#include "sha256.h"
#include "util.h"

static char *dir;                       /* the cluster's directory */
static char endpoint[256], ak[128], sk[128], bucket[64];
static char url[128];                   /* s3://bucket/<a prefix of this run> */

static int sh(const char *fmt, const char *arg) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, fmt, getenv("URSA_S3_SERVER"), arg);
    return system(cmd);
}

static void env_line(const char *text, const char *name, char *out, size_t n) {
    char pat[64];
    snprintf(pat, sizeof pat, "%s=", name);
    const char *p = strstr(text, pat);
    out[0] = '\0';
    if (!p) return;
    p += strlen(pat);
    size_t l = strcspn(p, "\n");
    snprintf(out, n, "%.*s", (int)(l < n ? l : n - 1), p);
}

static int server_up(void **state) {
    (void)state;
    if (!getenv("URSA_S3_SERVER")) {
        fprintf(stderr, "URSA_S3_SERVER must name ops/s3-server.sh\n");
        return -1;
    }
    if (!(dir = test_mkdtemp())) return -1;
    char d[4200];
    snprintf(d, sizeof d, "%s/s3", dir);
    if (sh("%s start %s >/dev/null", d) != 0) return -1;
    char envf[4300], *text = NULL;
    size_t len;
    snprintf(envf, sizeof envf, "%s/env", d);
    if (util_read_file(envf, 4096, &text, &len) != URSA_OK) return -1;
    env_line(text, "S3_ENDPOINT", endpoint, sizeof endpoint);
    env_line(text, "AWS_ACCESS_KEY_ID", ak, sizeof ak);
    env_line(text, "AWS_SECRET_ACCESS_KEY", sk, sizeof sk);
    env_line(text, "S3_BUCKET", bucket, sizeof bucket);
    free(text);
    snprintf(url, sizeof url, "s3://%s/run-%d", bucket, (int)getpid());
    return endpoint[0] && ak[0] && sk[0] ? 0 : -1;
}

static int server_down(void **state) {
    (void)state;
    char d[4200];
    snprintf(d, sizeof d, "%s/s3", dir);
    sh("%s stop %s >/dev/null 2>&1", d);
    test_rmdir(dir);
    return 0;
}

static blob_s3_opts opts(void) {
    blob_s3_opts o = {.url = url, .endpoint = endpoint, .region = "us-east-1",
                      .access_key = ak, .secret_key = sk, .timeout_ms = 5000,
                      .retries = 2, .max_inflight = 8};
    return o;
}

static blob_store *open_store(void) {
    char err[512];
    blob_s3_opts o = opts();
    blob_store *bs = blob_store_new_s3(&o, err, sizeof err);
    if (!bs) fprintf(stderr, "open: %s\n", err);
    assert_non_null(bs);
    assert_true(blob_store_remote(bs));
    return bs;
}

static void put_get_under_its_hash(void **state) {
    (void)state;
    blob_store *bs = open_store();
    char key[65], key2[65], path[512], want[512];
    assert_int_equal(blob_put(bs, "abc", 3, key), URSA_OK);
    assert_string_equal(key, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_true(blob_exists(bs, key));
    assert_int_equal(blob_path(bs, key, path, sizeof path), URSA_OK);
    snprintf(want, sizeof want, "%s/ba/%s", url, key);
    assert_string_equal(path, want);
    char *data;
    size_t len;
    assert_int_equal(blob_get(bs, key, 1 << 20, &data, &len), URSA_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(data, "abc", 3);
    free(data);
    /* the same bytes again: the same key, and no error (412 or a rewrite) */
    assert_int_equal(blob_put(bs, "abc", 3, key2), URSA_OK);
    assert_string_equal(key, key2);
    /* bigger than the caller takes */
    assert_int_equal(blob_get(bs, key, 2, &data, &len), URSA_ERR_TOO_LARGE);
    assert_null(data);
    /* a key never stored */
    const char *absent = "0000000000000000000000000000000000000000000000000000000000000000";
    assert_false(blob_exists(bs, absent));
    assert_int_equal(blob_get(bs, absent, 100, &data, &len), URSA_ERR_NOT_FOUND);
    assert_int_equal(blob_get(bs, "../etc/passwd", 100, &data, &len), URSA_ERR_INVALID);
    /* a blob of 1 MB round-trips */
    size_t big = 1 << 20;
    char *b = malloc(big);
    for (size_t i = 0; i < big; i++) b[i] = (char)(i * 7919 >> 3);
    assert_int_equal(blob_put(bs, b, big, key), URSA_OK);
    assert_int_equal(blob_get(bs, key, big, &data, &len), URSA_OK);
    assert_int_equal(len, big);
    assert_memory_equal(data, b, big);
    free(data);
    free(b);
    /* a blob its writer alone holds can go; going twice is no error */
    assert_int_equal(blob_delete(bs, key), URSA_OK);
    assert_false(blob_exists(bs, key));
    assert_int_equal(blob_delete(bs, key), URSA_OK);
    blob_stats st;
    blob_store_stats(bs, &st);
    assert_true(st.requests >= 8);
    assert_true(st.bytes_out >= big && st.bytes_in >= big);
    blob_store_destroy(bs);
}

/* Many lazy puts, one sync: all stored, several uploads at once. */
/* The bucket's listing, its times, and a put again making a blob newer. */
static void lists_with_times(void **state) {
    (void)state;
    blob_store *bs = open_store();
    (void)list_and_times(bs, 5000); /* the gateway's clock is this machine's, give or take */
    blob_store_destroy(bs);
}

static void lazy_puts_are_stored_by_sync(void **state) {
    (void)state;
    blob_store *bs = open_store();
    enum { N = 300 };
    char keys[N][65], buf[64];
    for (int i = 0; i < N; i++) {
        int l = snprintf(buf, sizeof buf, "lazy blob %d of test_blob_s3", i);
        assert_int_equal(blob_put_lazy(bs, buf, (size_t)l, keys[i]), URSA_OK);
    }
    assert_int_equal(blob_store_sync(bs), URSA_OK);
    for (int i = 0; i < N; i += 17) {
        char *data;
        size_t len;
        assert_int_equal(blob_get(bs, keys[i], 100, &data, &len), URSA_OK);
        int l = snprintf(buf, sizeof buf, "lazy blob %d of test_blob_s3", i);
        assert_int_equal(len, l);
        assert_memory_equal(data, buf, len);
        free(data);
    }
    blob_store_destroy(bs);
}

/* An object whose bytes no longer hash to its key is refused and named. */
static void changed_object_is_corrupt(void **state) {
    (void)state;
    blob_store *bs = open_store();
    char key[65], path[512], err[512];
    assert_int_equal(blob_put(bs, "the real bytes", 14, key), URSA_OK);
    blob_path(bs, key, path, sizeof path);
    /* overwrite it behind the store's back, with curl's own SigV4 */
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "printf 'other bytes' | curl -sf -X PUT --data-binary @- --aws-sigv4 "
             "aws:amz:us-east-1:s3 --user '%s:%s' -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "
             "'%s/%s' >/dev/null",
             ak, sk, endpoint, path + 5);
    assert_int_equal(system(cmd), 0);
    char *data;
    size_t len;
    assert_int_equal(blob_get(bs, key, 100, &data, &len), URSA_ERR_CORRUPT);
    assert_null(data);
    blob_store_last_error(bs, err, sizeof err);
    assert_non_null(strstr(err, key));
    assert_non_null(strstr(err, "corrupt"));
    blob_stats st;
    blob_store_stats(bs, &st);
    assert_int_equal(st.corrupt, 1);
    blob_store_destroy(bs);
}

/* Start-up refuses with one line that says what is wrong. */
static void bad_settings_are_named(void **state) {
    (void)state;
    char err[512];
    blob_s3_opts o = opts();
    o.secret_key = "not-the-secret";
    assert_null(blob_store_new_s3(&o, err, sizeof err));
    assert_non_null(strstr(err, "access denied"));
    o = opts();
    o.url = "s3://no-such-bucket-here";
    assert_null(blob_store_new_s3(&o, err, sizeof err));
    assert_non_null(strstr(err, "no such bucket"));
    o = opts();
    o.endpoint = "http://127.0.0.1:1"; /* nothing listens on port 1 */
    assert_null(blob_store_new_s3(&o, err, sizeof err));
    assert_non_null(strstr(err, "cannot reach"));
    o = opts();
    o.url = "s3://UPPER";
    assert_null(blob_store_new_s3(&o, err, sizeof err));
    assert_non_null(strstr(err, "bucket name"));
    o = opts();
    o.url = "s3://ursa/../x";
    assert_null(blob_store_new_s3(&o, err, sizeof err));
    assert_non_null(strstr(err, "prefix"));
    o = opts();
    o.access_key = "";
    assert_null(blob_store_new_s3(&o, err, sizeof err));
    assert_non_null(strstr(err, "no credentials"));
}

/* Credentials from a file only its owner can read. */
static void credentials_file(void **state) {
    (void)state;
    char f[4200], text[512], buf[4096], err[512];
    snprintf(f, sizeof f, "%s/creds", dir);
    int l = snprintf(text, sizeof text,
                     "[other]\naws_access_key_id = nope\n[default]\naws_access_key_id = %s\n"
                     "aws_secret_access_key = \"%s\"\n", ak, sk);
    assert_int_equal(util_write_file_atomic(f, text, (size_t)l), URSA_OK);
    blob_s3_opts o = opts();
    chmod(f, 0644);
    assert_int_not_equal(blob_s3_credentials(&o, f, buf, sizeof buf, err, sizeof err), URSA_OK);
    assert_non_null(strstr(err, "chmod 600"));
    chmod(f, 0600);
    o.access_key = o.secret_key = NULL;
    assert_int_equal(blob_s3_credentials(&o, f, buf, sizeof buf, err, sizeof err), URSA_OK);
    assert_string_equal(o.access_key, ak);
    assert_string_equal(o.secret_key, sk);
    blob_store *bs = blob_store_new_s3(&o, err, sizeof err);
    assert_non_null(bs);
    blob_store_destroy(bs);
}

/* The gateway gone for a while: lazy puts wait, sync and durable puts say
 * UNAVAILABLE, and once it is back every blob is stored without a new put. */
static void gateway_outage_loses_nothing(void **state) {
    (void)state;
    blob_store *bs = open_store();
    char d[4200];
    snprintf(d, sizeof d, "%s/s3", dir);
    assert_int_equal(sh("%s stop-gateway %s >/dev/null 2>&1", d), 0);
    enum { N = 20 };
    char keys[N][65], buf[64], k1[65], why[512];
    for (int i = 0; i < N; i++) {
        int l = snprintf(buf, sizeof buf, "outage blob %d %d", i, (int)getpid());
        assert_int_equal(blob_put_lazy(bs, buf, (size_t)l, keys[i]), URSA_OK);
    }
    assert_int_equal(blob_store_sync(bs), URSA_ERR_UNAVAILABLE);
    assert_int_equal(blob_put(bs, "durable", 7, k1), URSA_ERR_UNAVAILABLE);
    blob_unwritable_why(bs, URSA_ERR_UNAVAILABLE, why, sizeof why);
    assert_non_null(strstr(why, "unreachable"));
    assert_non_null(strstr(why, bucket));
    assert_int_equal(sh("%s start-gateway %s >/dev/null 2>&1", d), 0);
    ursa_err err = URSA_ERR_UNAVAILABLE;
    for (int i = 0; i < 100 && err; i++) {
        err = blob_store_sync(bs);
        if (err) util_sleep_ms(200);
    }
    assert_int_equal(err, URSA_OK);
    for (int i = 0; i < N; i++) assert_true(blob_exists(bs, keys[i]));
    blob_stats st;
    blob_store_stats(bs, &st);
    assert_true(st.errors >= 1 && st.retries >= 1);
    blob_store_destroy(bs);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(put_get_under_its_hash),
        cmocka_unit_test(lists_with_times),
        cmocka_unit_test(lazy_puts_are_stored_by_sync),
        cmocka_unit_test(changed_object_is_corrupt),
        cmocka_unit_test(bad_settings_are_named),
        cmocka_unit_test(credentials_file),
        cmocka_unit_test(gateway_outage_loses_nothing),
    };
    return cmocka_run_group_tests(tests, server_up, server_down);
}
