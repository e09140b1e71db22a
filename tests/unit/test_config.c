/* Unit tests of config.c: the layers and their order, types and bounds,
 * pass-through settings, errors that name the setting, --help. */
#include "test.h"
#include "config.h"

static const cfg_def defs[] = {
    {"redis.url", CFG_STR, "redis://127.0.0.1:6379", 1, 0, "where Redis is"},
    {"kq.max-attempts", CFG_INT, "5", 1, 100, "attempts"},
    {"verbose", CFG_BOOL, "false", 1, 0, "talk more"},
    {"ratio", CFG_DOUBLE, "0.2", 0, 1, "a fraction"},
    {NULL, 0, NULL, 0, 0, NULL}};
static const cfg_def *const tables[] = {defs, NULL};

static void clear_env(void) {
    unsetenv("URSA_REDIS_URL");
    unsetenv("URSA_KQ_MAX_ATTEMPTS");
    unsetenv("URSA_CONFIG");
    unsetenv("URSA_KAFKA_SOCKET_TIMEOUT_MS");
    unsetenv("URSA_VERBOSE");
}

static void defaults_hold_without_other_layers(void **state) {
    (void)state;
    clear_env();
    cfg *c = cfg_new(tables, "kafka.");
    char *argv[] = {"x", NULL};
    int argi, help;
    char err[256];
    assert_int_equal(cfg_load(c, 1, argv, &argi, &help, err, sizeof err), URSA_OK);
    assert_string_equal(cfg_str(c, "redis.url"), "redis://127.0.0.1:6379");
    assert_int_equal(cfg_int(c, "kq.max-attempts"), 5);
    assert_false(cfg_bool(c, "verbose"));
    assert_true(cfg_double(c, "ratio") > 0.19 && cfg_double(c, "ratio") < 0.21);
    assert_int_equal(help, 0);
    assert_int_equal(argi, 1);
    cfg_destroy(c);
}

static void file_then_env_then_flags(void **state) {
    (void)state;
    clear_env();
    char *dir = test_mkdtemp();
    char path[4200];
    snprintf(path, sizeof path, "%s/u.conf", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "# comment\nredis.url = redis://file:1\nkq.max-attempts=7\n\n"
               "verbose = true   # trailing comment\nkafka.linger.ms = 9\n");
    fclose(f);
    cfg *c = cfg_new(tables, "kafka.");
    setenv("URSA_CONFIG", path, 1);
    setenv("URSA_KQ_MAX_ATTEMPTS", "8", 1);
    char *argv[] = {"x", "--ratio=0.5", "pos", NULL};
    int argi, help;
    char err[256];
    assert_int_equal(cfg_load(c, 3, argv, &argi, &help, err, sizeof err), URSA_OK);
    assert_string_equal(cfg_str(c, "redis.url"), "redis://file:1"); /* file */
    assert_int_equal(cfg_int(c, "kq.max-attempts"), 8);             /* env > file */
    assert_true(cfg_bool(c, "verbose"));
    assert_true(cfg_double(c, "ratio") == 0.5); /* flag */
    assert_int_equal(argi, 2);                  /* "pos" is positional */
    assert_int_equal(cfg_passthrough_count(c), 1);
    const char *n, *v;
    cfg_passthrough_get(c, 0, &n, &v);
    assert_string_equal(n, "kafka.linger.ms");
    assert_string_equal(v, "9");
    cfg_destroy(c);

    /* a flag beats the environment, which beats the file */
    c = cfg_new(tables, "kafka.");
    char *argv2[] = {"x", "--kq.max-attempts", "9", "--verbose", NULL};
    assert_int_equal(cfg_load(c, 4, argv2, &argi, &help, err, sizeof err), URSA_OK);
    assert_int_equal(cfg_int(c, "kq.max-attempts"), 9);
    assert_true(cfg_bool(c, "verbose"));
    cfg_destroy(c);
    clear_env();
    test_rmdir(dir);
}

static void passthrough_from_env_and_flags(void **state) {
    (void)state;
    clear_env();
    setenv("URSA_KAFKA_SOCKET_TIMEOUT_MS", "1234", 1);
    cfg *c = cfg_new(tables, "kafka.");
    char *argv[] = {"x", "--kafka.security.protocol=plaintext", NULL};
    int argi, help;
    char err[256];
    assert_int_equal(cfg_load(c, 2, argv, &argi, &help, err, sizeof err), URSA_OK);
    assert_int_equal(cfg_passthrough_count(c), 2);
    const char *n, *v;
    cfg_passthrough_get(c, 0, &n, &v);
    assert_string_equal(n, "kafka.socket.timeout.ms");
    assert_string_equal(v, "1234");
    cfg_passthrough_get(c, 1, &n, &v);
    assert_string_equal(n, "kafka.security.protocol");
    assert_string_equal(v, "plaintext");
    cfg_destroy(c);
    clear_env();
}

static void bad_values_are_refused_with_the_setting_named(void **state) {
    (void)state;
    clear_env();
    int argi, help;
    char err[256];
    struct {
        char *arg;
        const char *want;
    } cases[] = {{"--kq.max-attempts=0", "kq.max-attempts: 0 is outside 1..100"},
                 {"--kq.max-attempts=abc", "kq.max-attempts: expected a number"},
                 {"--verbose=maybe", "verbose: expected true or false"},
                 {"--ratio=1.5", "ratio: 1.5 is outside 0..1"},
                 {"--nonsense=1", "unknown flag --nonsense (see --help)"},
                 /* unknown: never "needs a value", and the nearest name */
                 {"--verbos", "unknown flag --verbos (did you mean --verbose?)"},
                 {"--kq.max-atempts", "(did you mean --kq.max-attempts?)"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cfg *c = cfg_new(tables, "kafka.");
        char *argv[] = {"x", cases[i].arg, NULL};
        assert_int_equal(cfg_load(c, 2, argv, &argi, &help, err, sizeof err),
                         URSA_ERR_CONFIG);
        assert_non_null(strstr(err, cases[i].want));
        /* the old value survives a refused one */
        assert_int_equal(cfg_int(c, "kq.max-attempts"), 5);
        cfg_destroy(c);
    }
    cfg *c = cfg_new(tables, NULL);
    char *argv[] = {"x", "--redis.url", NULL};
    assert_int_equal(cfg_load(c, 2, argv, &argi, &help, err, sizeof err), URSA_ERR_CONFIG);
    assert_non_null(strstr(err, "--redis.url needs a value"));
    char *argv2[] = {"x", "--kafka.x=1", NULL}; /* no prefix registered */
    assert_int_equal(cfg_load(c, 2, argv2, &argi, &help, err, sizeof err), URSA_ERR_CONFIG);
    cfg_destroy(c);

    setenv("URSA_KQ_MAX_ATTEMPTS", "500", 1);
    c = cfg_new(tables, NULL);
    char *argv3[] = {"x", NULL};
    assert_int_equal(cfg_load(c, 1, argv3, &argi, &help, err, sizeof err), URSA_ERR_CONFIG);
    assert_non_null(strstr(err, "$URSA_KQ_MAX_ATTEMPTS"));
    cfg_destroy(c);
    clear_env();
}

static void own_prefix_may_be_dropped_on_the_command_line(void **state) {
    (void)state;
    clear_env();
    cfg *c = cfg_new(tables, "kafka.");
    assert_int_equal(cfg_set_own_prefix(c, "kq."), URSA_OK);
    char *argv[] = {"x", "--max-attempts=7", "--verbose", "--ratio", "0.5", NULL};
    int argi, help;
    char err[256];
    assert_int_equal(cfg_load(c, 5, argv, &argi, &help, err, sizeof err), URSA_OK);
    assert_int_equal(cfg_int(c, "kq.max-attempts"), 7); /* --max-attempts: --kq.max-attempts */
    assert_true(cfg_bool(c, "verbose"));                /* whole names still work */
    assert_true(cfg_double(c, "ratio") > 0.49 && cfg_double(c, "ratio") < 0.51);
    char *bad[] = {"x", "--url", "redis://h:1", NULL}; /* not the own prefix: unknown */
    assert_int_not_equal(cfg_load(c, 3, bad, &argi, &help, err, sizeof err), URSA_OK);
    assert_non_null(strstr(err, "url"));
    cfg_destroy(c);
}

static void bad_config_file_line_names_file_and_line(void **state) {
    (void)state;
    clear_env();
    char *dir = test_mkdtemp();
    char path[4200];
    snprintf(path, sizeof path, "%s/bad.conf", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "redis.url = redis://x:1\nthis line has no equals sign\n");
    fclose(f);
    cfg *c = cfg_new(tables, NULL);
    char err[512];
    assert_int_equal(cfg_load_file(c, path, err, sizeof err), URSA_ERR_CONFIG);
    assert_non_null(strstr(err, ":2: expected name = value"));
    char *argv[] = {"x", "--config", "/nonexistent/ursa.conf", NULL};
    int argi, help;
    assert_int_equal(cfg_load(c, 3, argv, &argi, &help, err, sizeof err), URSA_ERR_CONFIG);
    assert_non_null(strstr(err, "/nonexistent/ursa.conf"));
    cfg_destroy(c);
    test_rmdir(dir);
}

/* One file for every program: quoted values, a '#' inside a value, other
 * programs' settings ignored, a typo in this program's own section refused */
static void shared_file_with_quotes_and_foreign_keys(void **state) {
    (void)state;
    clear_env();
    char *dir = test_mkdtemp();
    char path[4200];
    snprintf(path, sizeof path, "%s/shared.conf", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "redis.url = \"redis://:pa#ss\\\"w@host:1\"  # the password has a # in it\n"
               "inference.port = 8080\ncrawler.max-inflight = 9\nkq.max-attempts = '6'\n");
    fclose(f);
    cfg *c = cfg_new(tables, "kafka.");
    char err[512] = "";
    assert_int_equal(cfg_load_file(c, path, err, sizeof err), URSA_OK);
    assert_string_equal(cfg_str(c, "redis.url"), "redis://:pa#ss\"w@host:1");
    assert_int_equal(cfg_int(c, "kq.max-attempts"), 6);
    cfg_destroy(c);
    f = fopen(path, "w");
    fprintf(f, "kq.max-attempt = 3\n"); /* kq. is this program's: a typo */
    fclose(f);
    c = cfg_new(tables, "kafka.");
    assert_int_equal(cfg_load_file(c, path, err, sizeof err), URSA_ERR_CONFIG);
    assert_non_null(strstr(err, "unknown setting \"kq.max-attempt\""));
    cfg_destroy(c);
    f = fopen(path, "w");
    fprintf(f, "redis.url = \"redis://open\n");
    fclose(f);
    c = cfg_new(tables, "kafka.");
    assert_int_equal(cfg_load_file(c, path, err, sizeof err), URSA_ERR_CONFIG);
    assert_non_null(strstr(err, ":1: a quote left open"));
    cfg_destroy(c);
    test_rmdir(dir);
}

static void help_lists_every_setting_with_env_name(void **state) {
    (void)state;
    clear_env();
    cfg *c = cfg_new(tables, "kafka.");
    char *argv[] = {"x", "--help", NULL};
    int argi, help;
    char err[256];
    assert_int_equal(cfg_load(c, 2, argv, &argi, &help, err, sizeof err), URSA_OK);
    assert_int_equal(help, 1);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    cfg_print_help(c, out);
    fclose(out);
    for (const cfg_def *d = defs; d->name; d++) assert_non_null(strstr(buf, d->name));
    assert_non_null(strstr(buf, "URSA_KQ_MAX_ATTEMPTS"));
    assert_non_null(strstr(buf, "[default: redis://127.0.0.1:6379]"));
    assert_non_null(strstr(buf, "--kafka.NAME"));
    free(buf);
    cfg_destroy(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_hold_without_other_layers),
        cmocka_unit_test(file_then_env_then_flags),
        cmocka_unit_test(passthrough_from_env_and_flags),
        cmocka_unit_test(bad_values_are_refused_with_the_setting_named),
        cmocka_unit_test(own_prefix_may_be_dropped_on_the_command_line),
        cmocka_unit_test(bad_config_file_line_names_file_and_line),
        cmocka_unit_test(shared_file_with_quotes_and_foreign_keys),
        cmocka_unit_test(help_lists_every_setting_with_env_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
