/* Unit tests of blob.c: content addressing, immutability, integrity. */
#include <sys/stat.h>
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
