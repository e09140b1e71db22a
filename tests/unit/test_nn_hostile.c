/* Unit tests of the NN engine against hostile models (issue 27): ONNX
 * files from tests/tools/onnx_gen.c that a real exporter never writes, and
 * hand-built graphs that ask for the same, must be refused at import or at
 * plan time with an error naming the problem; none may crash, wrap a size
 * or take the memory first and fail after. */
#include <time.h>

#include "blas.h"
#include "nn.h"
#include "onnx_gen.h"
#include "test.h"

static char err[512];

/* loads buf (freed) of *len bytes (read after the generator that wrote it
 * has run); returns the import's result, err set */
static ursa_err load(uint8_t *buf, const size_t *len, nn_model *m) {
    assert_non_null(buf);
    err[0] = 0;
    ursa_err e = nn_onnx_load_mem(buf, *len, m, err, sizeof err);
    free(buf);
    return e;
}

static void refused(uint8_t *buf, const size_t *len, const char *want) {
    nn_model m;
    ursa_err e = load(buf, len, &m);
    if (e == URSA_OK) {
        nn_model_free(&m);
        fail_msg("accepted; wanted an error with \"%s\"", want);
    }
    if (!strstr(err, want)) fail_msg("error \"%s\" does not say \"%s\"", err, want);
}

/* 32 Concats doubling one channel make 2^32 channels, and one more 2^32 +
 * 1: an int wrapped it to 1 and the arena with it (a 1.7 KB file overflowed
 * the heap in ursa predict) */
static void concat_channel_wrap(void **state) {
    (void)state;
    size_t len;
    refused(onnx_gen_concat(1, 8, 32, &len), &len, "Concat concat24: 33554432 channels");
    refused(onnx_gen_concat(3, 8, 33, &len), &len, "channels, more than");
    /* the same graph built by hand reaches the plan, which refuses it */
    nn_model m;
    nn_model_init(&m, 1);
    int x = nn_gap(&m, 0), p = x;
    for (int i = 0; i < 32; i++) x = nn_concat(&m, x, x);
    nn_concat(&m, x, p);
    nn_exec *e = NULL;
    assert_int_equal(nn_exec_new_err(&m, 1, 8, 8, 0, &e, err, sizeof err), URSA_ERR_INVALID);
    assert_null(e);
    assert_non_null(strstr(err, "(concat): output"));
    nn_model_free(&m);
    /* ... and a value too large for the engine's ints, channels times area */
    nn_model_init(&m, 3);
    nn_conv(&m, "big", 0, 1 << 16, 1, 1, 0, 0);
    assert_int_equal(nn_exec_new_err(&m, 1, 4096, 4096, 0, &e, err, sizeof err),
                     URSA_ERR_INVALID);
    assert_non_null(strstr(err, "big (conv): output 65536x4096x4096"));
    nn_model_free(&m);
}

/* attributes out of range are refused by the node's name; the ordinary
 * values load */
static void conv_attributes_bounded(void **state) {
    (void)state;
    size_t len;
    nn_model m;
    assert_int_equal(load(onnx_gen_conv_attr("pads", 1, &len), &len, &m), URSA_OK);
    nn_exec *e = NULL;
    assert_int_equal(nn_exec_new_err(&m, 1, 8, 8, 0, &e, err, sizeof err), URSA_OK);
    nn_exec_free(e);
    nn_model_free(&m);
    const struct {
        const char *name;
        int64_t v;
    } bad[] = {{"kernel_shape", 0},   {"kernel_shape", -3}, {"kernel_shape", 1LL << 32},
               {"strides", 0},        {"strides", -1},      {"strides", 1LL << 33},
               {"pads", -1},          {"pads", 65},         {"pads", (1LL << 32) + 1},
               {"dilations", 0},      {"dilations", 2},     {"dilations", -1},
               {"group", 0},          {"group", -1},        {"group", 3},
               {"group", 1LL << 32}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nn_model r;
        if (load(onnx_gen_conv_attr(bad[i].name, bad[i].v, &len), &len, &r) == URSA_OK) {
            nn_model_free(&r);
            fail_msg("%s = %lld accepted", bad[i].name, (long long)bad[i].v);
        }
        if (!strstr(err, "Conv c")) fail_msg("%s = %lld: \"%s\"", bad[i].name, (long long)bad[i].v, err);
    }
}

/* an initializer's data must hold exactly what its dims say */
static void initializer_matches_dims(void **state) {
    (void)state;
    size_t len;
    nn_model m;
    refused(onnx_gen_short_weight(107, &len), &len, "weight");
    refused(onnx_gen_short_weight(109, &len), &len, "weight");
    refused(onnx_gen_short_weight(0, &len), &len, "weight");
    assert_int_equal(load(onnx_gen_short_weight(108, &len), &len, &m), URSA_OK);
    nn_model_free(&m);
}

/* graphs nested in node attributes, types in types: refused by depth
 * before protobuf-c's recursive unpack sees them (5,000 levels overflowed
 * its stack); a shallow nesting still gets as far as the operator */
static void deep_nesting_refused(void **state) {
    (void)state;
    size_t len;
    refused(onnx_gen_deep(5000, &len), &len, "nested more than 16 deep");
    refused(onnx_gen_deep_type(5000, &len), &len, "nested more than 16 deep");
    refused(onnx_gen_deep(6, &len), &len, "nested more than 16 deep"); /* 2 + 3 x 6 levels */
    refused(onnx_gen_deep(2, &len), &len, "the graph has no data input");
    refused(onnx_gen_deep_type(3, &len), &len, "the graph has no output");
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* import and the graph passes are linear in the nodes: the largest graph
 * allowed, every node reading the first value (the farthest back a name
 * could be looked up), loads, fuses and plans in well under a second
 * (the code before took 1.6 s for these 20,000 nodes, 25 s for 80,000:
 * a name lookup and a reader count were each a scan); more nodes than the
 * cap are refused, naming it */
static void many_nodes_linear(void **state) {
    (void)state;
    size_t len;
    nn_model m, f;
    refused(onnx_gen_wide(80000, &len), &len, "the graph has 80001 nodes, more than 20000");
    uint8_t *buf = onnx_gen_wide(NN_ONNX_MAX_NODES - 1, &len);
    double t0 = now_s();
    assert_int_equal(load(buf, &len, &m), URSA_OK);
    assert_int_equal(nn_fuse_for_inference(&m, &f), URSA_OK);
    nn_exec *e = NULL;
    assert_int_equal(nn_exec_new_err(&f, 1, 8, 8, 0, &e, err, sizeof err), URSA_OK);
    double dt = now_s() - t0;
    nn_exec_free(e);
    nn_model_free(&f);
    nn_model_free(&m);
    if (dt > 0.5) fail_msg("%d nodes took %.2f s", NN_ONNX_MAX_NODES, dt);
}

/* nn.max-model-mb: parameters are counted before they are made, and the
 * node that passes the limit is named; protobuf-c's unpacking is held to
 * it too */
static void model_budget(void **state) {
    (void)state;
    size_t len;
    nn_limits l = {1 << 20, 0};
    nn_limits_set(&l);
    /* 180 convs each with its own copy of a 64 x 3 x 3 x 3 weight: 2.5 MB */
    refused(onnx_gen_fanout(224, 180, 64, &len), &len, "over nn.max-model-mb (1)");
    assert_non_null(strstr(err, "Conv conv"));
    l.model_bytes = 16 << 10;
    nn_limits_set(&l);
    refused(onnx_gen_big_value(224, 4096, &len), &len,
            "unpacked, the file takes more than nn.max-model-mb");
    l.model_bytes = 0;
    nn_limits_set(&l);
}

/* nn.max-exec-mb: checked as the plan grows, naming the node, before the
 * arena is taken */
static void exec_budget(void **state) {
    (void)state;
    size_t len;
    nn_model m;
    nn_exec *e = NULL;
    assert_int_equal(load(onnx_gen_big_value(224, 4096, &len), &len, &m), URSA_OK);
    nn_limits l = {0, 256 << 20};
    nn_limits_set(&l);
    assert_int_equal(nn_exec_new_err(&m, 1, 224, 224, 0, &e, err, sizeof err),
                     URSA_ERR_TOO_LARGE);
    assert_null(e);
    if (!strstr(err, "node wide (conv): its output (784 MB)") ||
        !strstr(err, "over nn.max-exec-mb (256)"))
        fail_msg("%s", err);
    l.exec_bytes = 0;
    nn_limits_set(&l);
    nn_model_free(&m);
}

/* values nobody reads neither run nor keep memory: an imported graph's
 * dead branches are dropped, and a plan gives an unread output's buffer
 * back at once (180 unread convs of a 25 KB file took 2.3 GB) */
static void unread_values_share(void **state) {
    (void)state;
    size_t len;
    nn_model m;
    nn_exec *e = NULL;
    assert_int_equal(load(onnx_gen_fanout(224, 180, 64, &len), &len, &m), URSA_OK);
    assert_int_equal(m.nnode, 2); /* the last conv and the pool */
    assert_int_equal(nn_exec_new_err(&m, 1, 224, 224, 0, &e, err, sizeof err), URSA_OK);
    if (nn_exec_bytes(e) > (64u << 20)) fail_msg("%zu MB", nn_exec_bytes(e) >> 20);
    nn_exec_free(e);
    nn_model_free(&m);
    /* by hand: 20 convs of the input, only the last read */
    nn_model_init(&m, 3);
    int y = 0;
    for (int i = 0; i < 20; i++) y = nn_conv(&m, "c", 0, 64, 3, 1, 1, 0);
    nn_gap(&m, y);
    assert_int_equal(nn_exec_new_err(&m, 1, 64, 64, 0, &e, err, sizeof err), URSA_OK);
    /* each output is 1 MB: two buffers and the packed weights, not twenty */
    if (nn_exec_bytes(e) > (6u << 20)) fail_msg("%zu MB", nn_exec_bytes(e) >> 20);
    nn_exec_free(e);
    nn_model_free(&m);
}

int main(int argc, char **argv) {
    (void)argc;
    nn_blas_init(argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(concat_channel_wrap),
        cmocka_unit_test(conv_attributes_bounded),
        cmocka_unit_test(initializer_matches_dims),
        cmocka_unit_test(deep_nesting_refused),
        cmocka_unit_test(many_nodes_linear),
        cmocka_unit_test(model_budget),
        cmocka_unit_test(exec_budget),
        cmocka_unit_test(unread_values_share),
    };
    return cmocka_run_group_tests_name("nn_hostile", tests, NULL, NULL);
}
