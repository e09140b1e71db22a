/* Unit tests of blob.c: content addressing, immutability, integrity. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "blob.h"
#include "blob_cases.h"
#include "util.h"

static void put_get_roundtrip_under_its_hash(void **state) {
    (void)state;
    char *dir = test_mkdtemp();
    char err[256], key[65], path[4200];
    blob_store *bs = blob_store_new(dir, err, sizeof err);
    assert_non_null(bs);
    assert_int_equal(blob_put(bs, "abc", 3, key), URSA_OK);
    assert_string_equal(key, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_true(blob_exists(bs, key));
    assert_int_equal(blob_path(bs, key, path, sizeof path), URSA_OK);
    char want[4200];
    snprintf(want, sizeof want, "%s/ba/%s", dir, key);
    assert_string_equal(path, want);
    char *data;
    size_t len;
    assert_int_equal(blob_get(bs, key, 1 << 20, &data, &len), URSA_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(data, "abc", 3);
    free(data);
    /* the same bytes again: same key, file untouched */
    struct stat st1, st2;
    stat(path, &st1);
    char key2[65];
    assert_int_equal(blob_put(bs, "abc", 3, key2), URSA_OK);
    assert_string_equal(key, key2);
    stat(path, &st2);
    assert_int_equal(st1.st_ino, st2.st_ino); /* not written again, only touched */
    /* empty blobs are blobs too */
    assert_int_equal(blob_put(bs, "", 0, key2), URSA_OK);
    assert_int_equal(blob_get(bs, key2, 10, &data, &len), URSA_OK);
    assert_int_equal(len, 0);
    free(data);
    blob_store_destroy(bs);
    test_rmdir(dir);
}

static void missing_corrupt_oversized_and_bad_keys(void **state) {
    (void)state;
    char *dir = test_mkdtemp();
    char err[256], key[65], path[4200];
    blob_store *bs = blob_store_new(dir, err, sizeof err);
    char *data = (char *)1;
    const char *absent = "0000000000000000000000000000000000000000000000000000000000000000";
    assert_int_equal(blob_get(bs, absent, 100, &data, NULL), URSA_ERR_NOT_FOUND);
    assert_null(data);
    assert_false(blob_exists(bs, absent));
    assert_int_equal(blob_put(bs, "hello world", 11, key), URSA_OK);
    assert_int_equal(blob_get(bs, key, 5, &data, NULL), URSA_ERR_TOO_LARGE);
    blob_path(bs, key, path, sizeof path);
    FILE *f = fopen(path, "w"); /* someone damaged it */
    fputs("hello w0rld", f);
    fclose(f);
    assert_int_equal(blob_get(bs, key, 100, &data, NULL), URSA_ERR_CORRUPT);
    assert_null(data);
    assert_false(blob_key_valid("../../etc/passwd"));
    assert_false(blob_key_valid("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"));
    assert_false(blob_key_valid("abc"));
    assert_int_equal(blob_path(bs, "../x", path, sizeof path), URSA_ERR_INVALID);
    assert_int_equal(blob_get(bs, "../x", 100, &data, NULL), URSA_ERR_INVALID);
    blob_store_destroy(bs);
    test_rmdir(dir);
}

static void no_temp_files_left_behind(void **state) {
    (void)state;
    char *dir = test_mkdtemp();
    char err[256], key[65], cmd[4300];
    blob_store *bs = blob_store_new(dir, err, sizeof err);
    for (int i = 0; i < 50; i++) {
        char b[32];
        snprintf(b, sizeof b, "blob %d", i);
        assert_int_equal(blob_put(bs, b, strlen(b), key), URSA_OK);
    }
    snprintf(cmd, sizeof cmd, "test $(find '%s' -type f | wc -l) -eq 50 && "
                              "! find '%s' -name '*.tmp.*' | grep -q .", dir, dir);
    assert_int_equal(system(cmd), 0);
    blob_store_destroy(bs);
    test_rmdir(dir);
}

static void delete_and_describe(void **state) {
    (void)state;
    char *dir = test_mkdtemp();
    char err[256], key[65];
    blob_store *bs = blob_store_new(dir, err, sizeof err);
    assert_false(blob_store_remote(bs));
    assert_non_null(strstr(blob_store_where(bs), dir));
    assert_int_equal(blob_put(bs, "gone soon", 9, key), URSA_OK);
    assert_int_equal(blob_delete(bs, key), URSA_OK);
    assert_false(blob_exists(bs, key));
    assert_int_equal(blob_delete(bs, key), URSA_OK); /* twice: no error */
    assert_int_equal(blob_delete(bs, "../x"), URSA_ERR_INVALID);
    /* lazy puts are visible at once and sync does not fail */
    assert_int_equal(blob_put_lazy(bs, "lazy", 4, key), URSA_OK);
    assert_true(blob_exists(bs, key));
    assert_int_equal(blob_store_sync(bs), URSA_OK);
    blob_store_destroy(bs);
    test_rmdir(dir);
}

/* a store the CLI or a daemon creates is its owner's alone (0700): its
 * images and models are not for every user of the host */
static void lists_with_times(void **state) {
    (void)state;
    char *dir = test_mkdtemp();
    char err[256];
    blob_store *bs = blob_store_new(dir, err, sizeof err);
    assert_non_null(bs);
    /* a file that is no blob is left out of the listing */
    char junk[4200];
    snprintf(junk, sizeof junk, "%s/ab", dir);
    mkdir(junk, 0700);
    snprintf(junk, sizeof junk, "%s/ab/notes.txt", dir);
    FILE *f = fopen(junk, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(list_and_times(bs, 0), 0); /* notes.txt is no blob */
    blob_store_destroy(bs);
    test_rmdir(dir);
}

static int count_listed(void *ctx, const char *key, uint64_t size, int64_t ms);

/* gc's delete: an old blob goes, one written lately stays; a blob a gc
 * cut short had set aside comes back at the next listing */
static void delete_if_old_and_set_aside(void **state) {
    (void)state;
    char *dir = test_mkdtemp();
    char err[256], old_key[65], new_key[65], path[4200], aside[4300];
    blob_store *bs = blob_store_new(dir, err, sizeof err);
    assert_non_null(bs);
    assert_int_equal(blob_put(bs, "old bytes", 9, old_key), URSA_OK);
    assert_int_equal(blob_put(bs, "new bytes", 9, new_key), URSA_OK);
    assert_int_equal(blob_path(bs, old_key, path, sizeof path), URSA_OK);
    struct timespec two_days_ago[2] = {{time(NULL) - 2 * 86400, 0}, {time(NULL) - 2 * 86400, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, two_days_ago, 0), 0);
    int64_t cutoff = util_now_ms() - 86400000LL;
    int kept = -1;
    assert_int_equal(blob_delete_if_old(bs, new_key, cutoff, &kept), URSA_OK);
    assert_int_equal(kept, 1);
    assert_true(blob_exists(bs, new_key));
    assert_int_equal(blob_delete_if_old(bs, old_key, cutoff, &kept), URSA_OK);
    assert_int_equal(kept, 0);
    assert_false(blob_exists(bs, old_key));
    assert_int_equal(blob_delete_if_old(bs, old_key, cutoff, &kept), URSA_OK); /* gone: fine */
    /* set aside and never decided (a gc killed between its steps) */
    assert_int_equal(blob_path(bs, new_key, path, sizeof path), URSA_OK);
    snprintf(aside, sizeof aside, "%s.gc", path);
    assert_int_equal(rename(path, aside), 0);
    assert_false(blob_exists(bs, new_key));
    int n = 0;
    assert_int_equal(blob_list(bs, count_listed, &n), URSA_OK);
    assert_int_equal(n, 1);
    assert_true(blob_exists(bs, new_key));
    blob_store_destroy(bs);
    test_rmdir(dir);
}

/* ---- an S3 server that answers every request with one listing ---------- */

static const char *listing; /* the body every request gets */
static int lfd = -1;

static void *serve_listing(void *arg) {
    (void)arg;
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0) return NULL;
        char req[8192];
        size_t got = 0;
        ssize_t k;
        while (got < sizeof req - 1 && (k = read(c, req + got, sizeof req - 1 - got)) > 0) {
            got += (size_t)k;
            req[got] = '\0';
            if (strstr(req, "\r\n\r\n")) break;
        }
        char head[200];
        int hl = snprintf(head, sizeof head,
                          "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n", strlen(listing));
        if (write(c, head, (size_t)hl) < 0 || write(c, listing, strlen(listing)) < 0) {}
        close(c);
    }
}

static blob_store *fake_s3(pthread_t *th) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 16), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
    assert_int_equal(pthread_create(th, NULL, serve_listing, NULL), 0);
    char ep[64], err[512];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", ntohs(a.sin_port));
    blob_s3_opts o = {.url = "s3://bkt/p", .endpoint = ep, .region = "us-east-1",
                      .access_key = "AKIDEXAMPLE", .secret_key = "secret", .timeout_ms = 5000,
                      .retries = 0, .max_inflight = 1};
    blob_store *bs = blob_store_new_s3(&o, err, sizeof err);
    if (!bs) fail_msg("%s", err);
    return bs;
}

static void fake_s3_stop(blob_store *bs, pthread_t th) {
    blob_store_destroy(bs);
    shutdown(lfd, SHUT_RDWR);
    close(lfd);
    pthread_join(th, NULL);
}

static int count_listed(void *ctx, const char *key, uint64_t size, int64_t ms) {
    (void)size, (void)ms;
    assert_true(blob_key_valid(key));
    (*(int *)ctx)++;
    return 0;
}

#define K64 "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define ENTRY(name) "<Contents><Key>" name "</Key><LastModified>2026-12-01T10:00:00.000Z" \
                    "</LastModified><Size>3</Size></Contents>"

/* A hostile or broken S3 listing: the one blob under the store's prefix is
 * taken, the rest left out; a page that says there is more but names the
 * same place again, or a DOCTYPE (entity expansion), ends the listing with
 * an error instead of a loop or a blow-up. */
static void s3_listing_hostile(void **state) {
    (void)state;
    alarm(30); /* a listing that loops fails the test, not the CI run */
    pthread_t th;
    listing = "<?xml version=\"1.0\"?><ListBucketResult><IsTruncated>false</IsTruncated>"
              ENTRY("p/ba/" K64) ENTRY("q/ba/" K64) ENTRY("p/ba/x" K64) ENTRY("p/cc/" K64)
              ENTRY("pba/" K64 "0") "</ListBucketResult>";
    blob_store *bs = fake_s3(&th);
    int n = 0;
    assert_int_equal(blob_list(bs, count_listed, &n), URSA_OK);
    assert_int_equal(n, 1);
    int64_t t = 0;
    assert_int_equal(blob_mtime(bs, K64, &t), URSA_OK);
    assert_int_equal(t, 1796119200000LL); /* 2026-12-01T10:00:00Z */
    listing = "<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>again"
              "</NextContinuationToken>" ENTRY("p/ba/" K64) "</ListBucketResult>";
    n = 0;
    assert_int_equal(blob_list(bs, count_listed, &n), URSA_ERR_CORRUPT);
    assert_true(n <= 2);
    listing = "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>";
    assert_int_equal(blob_list(bs, count_listed, &n), URSA_ERR_CORRUPT);
    listing = "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\">"
              "<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]>"
              "<ListBucketResult><Contents><Key>&b;</Key></Contents></ListBucketResult>";
    assert_int_equal(blob_list(bs, count_listed, &n), URSA_ERR_CORRUPT);
    fake_s3_stop(bs, th);
    alarm(0);
}

static void a_new_store_is_private(void **state) {
    (void)state;
    char *dir = test_mkdtemp(), sub[4200], err[256];
    snprintf(sub, sizeof sub, "%s/new/blobs", dir);
    mode_t old = umask(022);
    blob_store *bs = blob_store_new(sub, err, sizeof err);
    umask(old);
    assert_non_null(bs);
    struct stat st;
    assert_int_equal(stat(sub, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    blob_store_destroy(bs);
    test_rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(put_get_roundtrip_under_its_hash),
        cmocka_unit_test(missing_corrupt_oversized_and_bad_keys),
        cmocka_unit_test(no_temp_files_left_behind),
        cmocka_unit_test(delete_and_describe),
        cmocka_unit_test(a_new_store_is_private),
        cmocka_unit_test(lists_with_times),
        cmocka_unit_test(s3_listing_hostile),
        cmocka_unit_test(delete_if_old_and_set_aside),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
