/* Unit tests of url.c: one URL written many ways is one URL; what libcurl
 * cannot parse is refused. */
#include "test.h"
#include "url.h"

static void one_url_five_ways(void **state) {
    (void)state;
    const char *ways[] = {
        "http://example.com/a/b.jpg",
        "HTTP://Example.COM/a/b.jpg",
        "http://example.com:80/a/b.jpg",
        "http://example.com/a/b.jpg#fragment",
        "http://example.com/a/./c/../b.jpg",
        "http://example.com/%61/b%2Ejpg",
        "http://example.com/a/%2E%2E/a/b.jpg",
    };
    char out[2100], why[200];
    for (size_t i = 0; i < sizeof ways / sizeof *ways; i++) {
        assert_int_equal(url_normalize(ways[i], out, sizeof out, why, sizeof why), 0);
        assert_string_equal(out, "http://example.com/a/b.jpg");
    }
}

static void what_is_kept(void **state) {
    (void)state;
    char out[2100], why[200];
    struct {
        const char *in, *want;
    } cases[] = {
        {"https://example.com:443/x?b=1&a=2", "https://example.com/x?b=1&a=2"},
        {"https://example.com:8443/x", "https://example.com:8443/x"},
        {"http://example.com", "http://example.com/"},
        {"http://example.com/w_200,h_100/bear.jpg", "http://example.com/w_200,h_100/bear.jpg"},
        {"http://example.com/a%2fb%3F", "http://example.com/a%2Fb%3F"},
        {"http://[::1]:8080/a.jpg", "http://[::1]:8080/a.jpg"},
        {"http://user:pw@example.com/a", "http://user:pw@example.com/a"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        assert_int_equal(url_normalize(cases[i].in, out, sizeof out, why, sizeof why), 0);
        assert_string_equal(out, cases[i].want);
    }
}

static void refused(void **state) {
    (void)state;
    char out[2100], why[200], big[3000];
    const char *bad[] = {"http://[::1/a.jpg", "http://exa%mple/a.jpg", "ftp://example.com/a",
                         "http:///a.jpg", "http://example.com/a b", "example.com/a.jpg",
                         "http://example.com/%zz", "http://exa\tmple.com/"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        why[0] = '\0';
        assert_int_equal(url_normalize(bad[i], out, sizeof out, why, sizeof why), -1);
        assert_true(why[0] != '\0');
    }
    memset(big, 'a', sizeof big - 1);
    memcpy(big, "http://x.com/", 13);
    big[sizeof big - 1] = '\0';
    assert_int_equal(url_normalize(big, out, sizeof out, why, sizeof why), -1);
    assert_non_null(strstr(why, "longer than 2048"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_url_five_ways),
        cmocka_unit_test(what_is_kept),
        cmocka_unit_test(refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
