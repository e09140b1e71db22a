/* Unit tests of log.c: quoting keeps a line parseable; a skipped level does
 * not evaluate its arguments; a line is key=value with ts, level, svc. */
#include <unistd.h>

#include "test.h"
#include "log.h"

static int evaluated;
static int touch(void) { return ++evaluated; }

static void quote_escapes_and_truncates(void **state) {
    (void)state;
    char b[64];
    assert_string_equal(ulog_quote(b, sizeof b, "plain"), "\"plain\"");
    assert_string_equal(ulog_quote(b, sizeof b, "a \"q\" \\ b"), "\"a \\\"q\\\" \\\\ b\"");
    assert_string_equal(ulog_quote(b, sizeof b, "line\nbreak\ttab"), "\"linebreaktab\"");
    assert_string_equal(ulog_quote(b, sizeof b, NULL), "\"\"");
    char small[8];
    ulog_quote(small, sizeof small, "\"\"\"\"\"\"\"\"");
    assert_true(strlen(small) < sizeof small);
    assert_int_equal(small[strlen(small) - 1], '"');
}

static void levels_gate_argument_evaluation(void **state) {
    (void)state;
    ulog_level = ULOG_WARN;
    evaluated = 0;
    ULOG_DEBUG("event=x n=%d", touch());
    ULOG_INFO("event=x n=%d", touch());
    assert_int_equal(evaluated, 0);
    assert_int_equal(ulog_level_parse("debug"), ULOG_DEBUG);
    assert_int_equal(ulog_level_parse("loud"), -1);
}

static void line_format(void **state) {
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = dup(2);
    dup2(fds[1], 2);
    ulog_init("testsvc");
    ulog_level = ULOG_INFO;
    ULOG_INFO("event=hello n=%d", 42);
    dup2(saved, 2);
    close(fds[1]);
    char buf[512] = {0};
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    assert_true(n > 0);
    assert_memory_equal(buf, "ts=", 3);
    assert_non_null(strstr(buf, " level=info svc=testsvc pid="));
    assert_non_null(strstr(buf, " event=hello n=42\n"));
    assert_int_equal(strchr(buf, '\n') - buf, n - 1); /* exactly one line */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(quote_escapes_and_truncates),
        cmocka_unit_test(levels_gate_argument_evaluation),
        cmocka_unit_test(line_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
