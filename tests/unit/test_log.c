/* Unit tests of log.c: quoting keeps a line parseable; a skipped level does
 * not evaluate its arguments; a line is key=value with ts, level, svc; a
 * log file takes stdout and stderr and rotates by size. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

/* Lines of a file; -1 when it is missing. */
static int lines_in(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0, ch;
    while ((ch = fgetc(f)) != EOF) n += ch == '\n';
    fclose(f);
    return n;
}

/* 1 when the file holds needle. */
static int file_has(const char *path, const char *needle) {
    char buf[8192];
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/* In a child (the file takes its stdout and stderr): 40 lines of about 140
 * bytes into a file rotated at 1000 bytes, two rotated files kept. */
static void file_takes_std_and_rotates(void **state) {
    (void)state;
    char dir[] = "/tmp/ursa-test-log-XXXXXX", path[64], p1[80], p2[80], p3[80];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/d.log", dir);
    snprintf(p1, sizeof p1, "%s.1", path);
    snprintf(p2, sizeof p2, "%s.2", path);
    snprintf(p3, sizeof p3, "%s.3", path);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        ulog_level = ULOG_INFO;
        if (ulog_open_file(path, 1000, 2)) _exit(3);
        for (int i = 0; i < 40; i++) ULOG_INFO("event=filler i=%02d pad=%s", i, "0123456789abcdef");
        fprintf(stderr, "stderr-end\n");
        fflush(stderr);
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    int n0 = lines_in(path), n1 = lines_in(p1), n2 = lines_in(p2);
    assert_true(n0 >= 0 && n1 > 0 && n2 > 0);
    assert_int_equal(lines_in(p3), -1); /* two kept */
    struct stat sb;
    assert_int_equal(stat(p1, &sb), 0);
    assert_true(sb.st_size >= 1000 && sb.st_size < 1000 + 200); /* cut at the first line past */
    assert_int_equal(sb.st_mode & 0777, 0600);
    /* the newest lines are in the file or the one rotated last, with what
     * went to stderr after them; the oldest are gone */
    assert_true(file_has(path, "i=39") || file_has(p1, "i=39"));
    assert_true(file_has(path, "stderr-end") || file_has(p1, "stderr-end"));
    assert_false(file_has(p2, "i=00") || file_has(p1, "i=00") || file_has(path, "i=00"));
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* A log file moved away by someone else (an outside logrotate): the next
 * rotation opens a new one at the path instead of writing on in the moved
 * file for good. */
static void rotation_after_the_file_moved(void **state) {
    (void)state;
    char dir[] = "/tmp/ursa-test-log-XXXXXX", path[64], moved[80], cmd[128];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/d.log", dir);
    snprintf(moved, sizeof moved, "%s/elsewhere.log", dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        ulog_level = ULOG_INFO;
        if (ulog_open_file(path, 1000, 2)) _exit(3);
        ULOG_INFO("event=before");
        if (rename(path, moved)) _exit(4);
        for (int i = 0; i < 20; i++) ULOG_INFO("event=filler i=%02d pad=%s", i, "0123456789abcdef");
        ULOG_INFO("event=after");
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char p1[80];
    snprintf(p1, sizeof p1, "%s.1", path);
    assert_true(file_has(moved, "event=before"));
    assert_false(file_has(moved, "event=after")); /* not written on in the moved file */
    assert_true(lines_in(path) >= 0);              /* a new file at the path */
    assert_true(file_has(path, "event=after") || file_has(p1, "event=after"));
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(quote_escapes_and_truncates),
        cmocka_unit_test(levels_gate_argument_evaluation),
        cmocka_unit_test(line_format),
        cmocka_unit_test(file_takes_std_and_rotates),
        cmocka_unit_test(rotation_after_the_file_moved),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
