/* Unit tests of the SSRF guard in common/io/fetch.c: which addresses may
 * be connected to, with and without an allow-list. The guard on a real
 * redirect is shown by tests/integration/test_ingest.sh. */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "test.h"
#include "fetch.h"

static int allowed(const fetch_ctx *f, const char *addr) {
    struct sockaddr_in6 s6;
    struct sockaddr_in s4;
    memset(&s6, 0, sizeof s6);
    memset(&s4, 0, sizeof s4);
    if (inet_pton(AF_INET, addr, &s4.sin_addr) == 1) {
        s4.sin_family = AF_INET;
        return fetch_address_allowed(f, &s4);
    }
    assert_int_equal(inet_pton(AF_INET6, addr, &s6.sin6_addr), 1);
    s6.sin6_family = AF_INET6;
    return fetch_address_allowed(f, &s6);
}

static fetch_ctx *ctx(const char *allow, char *err, size_t n) {
    fetch_opts o = {8, 2, 1000, 1000, 0, 1, 1000, 5, "t", allow};
    return fetch_new(&o, err, n);
}

static void default_guard(void **state) {
    (void)state;
    char err[256];
    fetch_ctx *f = ctx("", err, sizeof err);
    assert_non_null(f);
    const char *blocked[] = {"127.0.0.1", "127.9.9.9", "10.1.2.3", "172.16.0.1", "172.31.255.255",
                             "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
                             "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fd00::1",
                             "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "ff02::1",
                             "2001:db8::1", "64:ff9b::a00:1",
                             /* IPv4 inside IPv6: compatible, translated, 6to4, Teredo (the
                              * server, or the inverted client), local NAT64 */
                             "::127.0.0.1", "::10.0.0.1", "::8.8.8.8", "::ffff:0:127.0.0.1",
                             "2002:7f00:1::1", "2002:a00:1::", "2002:a9fe:a9fe::1",
                             "2001:0:a00:1::1", "2001:0:808:808::80ff:fffe",
                             "64:ff9b:1::a00:1"};
    for (size_t i = 0; i < sizeof blocked / sizeof blocked[0]; i++)
        if (allowed(f, blocked[i])) fail_msg("%s should be refused", blocked[i]);
    const char *open[] = {"8.8.8.8", "172.32.0.1", "1.1.1.1", "2001:4860:4860::8888",
                          "::ffff:8.8.8.8", "192.169.0.1", "2002:808:808::1",
                          "2001:0:808:808::f7f7:f7f7"};
    for (size_t i = 0; i < sizeof open / sizeof open[0]; i++)
        if (!allowed(f, open[i])) fail_msg("%s should be allowed", open[i]);
    fetch_destroy(f);
}

static void allow_list(void **state) {
    (void)state;
    char err[256];
    fetch_ctx *f = ctx("127.0.0.1/32, 10.0.0.0/8,::1", err, sizeof err);
    assert_non_null(f);
    assert_true(allowed(f, "127.0.0.1"));
    assert_false(allowed(f, "127.0.0.2"));
    assert_true(allowed(f, "10.200.0.1"));
    assert_true(allowed(f, "::1"));
    assert_false(allowed(f, "169.254.169.254"));
    assert_false(allowed(f, "::127.0.0.1")); /* 127.0.0.1 is allowed; IPv6 forms of it are not */
    assert_false(allowed(f, "::ffff:127.0.0.2"));
    fetch_destroy(f);
    assert_null(ctx("localhost", err, sizeof err));
    assert_non_null(strstr(err, "\"localhost\" is not an address or CIDR"));
    assert_null(ctx("10.0.0.0/33", err, sizeof err));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(default_guard),
        cmocka_unit_test(allow_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
