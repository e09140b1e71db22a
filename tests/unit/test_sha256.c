/* Unit tests of sha256.c against the FIPS 180-4 example vectors. */
#include "test.h"
#include "sha256.h"

static void known_vectors(void **state) {
    (void)state;
    char hex[65];
    sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_hex(m, strlen(m), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void million_a_in_odd_chunks_equals_one_shot(void **state) {
    (void)state;
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    sha256_ctx c;
    uint8_t d[32];
    sha256_init(&c);
    size_t off = 0, step = 1;
    while (off < 1000000) { /* chunk sizes 1, 2, 3 ... cross every boundary */
        size_t n = step < 1000000 - off ? step : 1000000 - off;
        sha256_update(&c, a + off, n);
        off += n;
        step = step % 131 + 1;
    }
    sha256_final(&c, d);
    char hex[65], one[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    sha256_hex(a, 1000000, one);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    assert_string_equal(one, hex);
    free(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(known_vectors),
        cmocka_unit_test(million_a_in_odd_chunks_equals_one_shot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
