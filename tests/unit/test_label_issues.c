/* Confident learning on small cases with a known answer: planted label
 * errors are found with the right suggestion, per-class thresholds keep a
 * hard class's correct images and catch what argmax alone would miss, an
 * image confident in no class is an outlier, and the ranking puts the
 * worst first. */
#include "test.h"
#include "label_issues.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 10 images per class of 3, 0.8 on the true class, then flips and one
 * uniform image. */
static void planted_flips(void **state) {
    (void)state;
    enum { N = 31, K = 3 };
    float p[N * K];
    int label[N];
    for (int i = 0; i < 30; i++) {
        int t = i / 10;
        for (int j = 0; j < K; j++) p[i * K + j] = j == t ? 0.8f : 0.1f;
        label[i] = t;
    }
    label[2] = 1;  /* a class-0 image labelled 1 */
    label[15] = 2; /* a class-1 image labelled 2 */
    label[25] = 0; /* a class-2 image labelled 0 */
    for (int j = 0; j < K; j++) p[30 * K + j] = 1.0f / 3; /* confident in nothing */
    label[30] = 0;
    li_result r[N];
    long *joint = NULL;
    assert_int_equal(li_find(p, label, N, K, r, &joint), 3);
    for (int i = 0; i < N; i++) {
        li_kind want = i == 2 || i == 15 || i == 25 ? LI_LABEL : i == 30 ? LI_OUTLIER : LI_NONE;
        assert_int_equal(r[i].kind, want);
        assert_int_equal(r[i].given, label[i]);
    }
    assert_int_equal(r[2].suggested, 0);
    assert_int_equal(r[15].suggested, 1);
    assert_int_equal(r[25].suggested, 2);
    assert_int_equal(r[0].suggested, 0);
    /* the confident joint: 9 on each diagonal cell, the flips off it, the
     * outlier nowhere */
    long want[K][K] = {{9, 0, 1}, {1, 9, 0}, {0, 1, 9}};
    for (int i = 0; i < K; i++)
        for (int j = 0; j < K; j++) assert_int_equal(joint[i * K + j], want[i][j]);
    free(joint);
    /* quality: the self-confidence, 0.1 for a flip */
    assert_true(r[2].quality > 0.099 && r[2].quality < 0.101);
    assert_true(r[0].quality > 0.799 && r[0].quality < 0.801);
    size_t idx[N];
    for (size_t i = 0; i < N; i++) idx[i] = i;
    li_rank(r, idx, N);
    for (int i = 0; i < 3; i++) assert_int_equal(r[idx[i]].kind, LI_LABEL);
    assert_int_equal(idx[3], 30);
    assert_int_equal(r[idx[4]].kind, LI_NONE);
}

/* Per-class thresholds, not argmax: a hard class (its right images at
 * 0.55) keeps them; an image labelled with the easy class but leaning to
 * the hard one past its threshold is flagged; an image labelled with the
 * hard class that argmax would call easy (0.52) is not, since 0.52 is far
 * below what the easy class's own images get (the hard class's row of the
 * joint holds no other class, so pruning takes none of its images). */
static void per_class_thresholds(void **state) {
    (void)state;
    enum { K = 2, N = 22 };
    float p[N * K];
    int label[N];
    for (int i = 0; i < 10; i++) { /* easy class 0 */
        p[i * K] = 0.9f;
        p[i * K + 1] = 0.1f;
        label[i] = 0;
    }
    for (int i = 10; i < 20; i++) { /* hard class 1: right, but unsure */
        p[i * K] = 0.45f;
        p[i * K + 1] = 0.55f;
        label[i] = 1;
    }
    p[20 * K] = 0.4f; /* labelled 0, as sure of 1 as class 1's own images */
    p[20 * K + 1] = 0.6f;
    label[20] = 0;
    p[21 * K] = 0.52f; /* labelled 1; argmax says 0, weakly */
    p[21 * K + 1] = 0.48f;
    label[21] = 1;
    li_result r[N];
    assert_int_equal(li_find(p, label, N, K, r, NULL), 1);
    assert_int_equal(r[20].kind, LI_LABEL);
    assert_int_equal(r[20].suggested, 1);
    assert_int_equal(r[21].kind, LI_NONE);
    assert_int_equal(r[21].suggested, 1);
    for (int i = 10; i < 20; i++) assert_int_equal(r[i].kind, LI_NONE);
}

/* Pruning by noise rate finds flips the joint does not count: images
 * labelled 0 whose probability of 1 stays under class 1's threshold are
 * still the ones most in favour of 1, and the joint's row says how many to
 * take. Here class 1's own images are sure (0.95), so a flipped image at
 * 0.7 for class 1 misses the threshold; two more of class 0 lean to 1 at
 * 0.96 and are counted. The row (9 at 0, 2 at 1) scaled to the 12 images says 2:
 * the two counted are taken, and the ranking by self-confidence puts them
 * first; the one under the threshold is not taken (CL does not overreach). */
static void prune_takes_the_count(void **state) {
    (void)state;
    enum { K = 2, N = 22 };
    float p[N * K];
    int label[N];
    for (int i = 0; i < 10; i++) { /* class 1, sure */
        p[i * K] = 0.05f;
        p[i * K + 1] = 0.95f;
        label[i] = 1;
    }
    for (int i = 10; i < 19; i++) { /* class 0 */
        p[i * K] = 0.9f;
        p[i * K + 1] = 0.1f;
        label[i] = 0;
    }
    p[19 * K] = 0.3f; /* labelled 0, leaning to 1 but under its threshold */
    p[19 * K + 1] = 0.7f;
    label[19] = 0;
    for (int i = 20; i < 22; i++) { /* labelled 0, sure of 1 */
        p[i * K] = 0.04f;
        p[i * K + 1] = 0.96f;
        label[i] = 0;
    }
    li_result r[N];
    long *joint = NULL;
    assert_int_equal(li_find(p, label, N, K, r, &joint), 2);
    assert_int_equal(joint[0 * K + 1], 2);
    free(joint);
    assert_int_equal(r[20].kind, LI_LABEL);
    assert_int_equal(r[21].kind, LI_LABEL);
    assert_int_equal(r[20].suggested, 1);
    assert_int_equal(r[19].kind, LI_NONE);
    for (int i = 0; i < 19; i++) assert_int_equal(r[i].kind, LI_NONE);
}

static void bad_arguments(void **state) {
    (void)state;
    float p[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    int label[2] = {0, 7}; /* 7: out of range, left alone */
    li_result r[2];
    assert_int_equal(li_find(p, label, 2, 1, r, NULL), -1);
    assert_int_equal(li_find(NULL, label, 2, 2, r, NULL), -1);
    assert_int_equal(li_find(p, label, 2, 2, r, NULL), 0);
    assert_int_equal(r[1].kind, LI_NONE);
}

/* An audit's rows survive the blob format; damaged lines are skipped and
 * counted, never misread; sorting puts the surest first. */
static void rows_round_trip(void **state) {
    (void)state;
    li_row in[3] = {0};
    snprintf(in[0].image, sizeof in[0].image, "%032d", 1);
    snprintf(in[0].jpeg, sizeof in[0].jpeg, "%064d", 2);
    snprintf(in[0].given, sizeof in[0].given, "<script>\"x\"</script>");
    snprintf(in[0].suggested, sizeof in[0].suggested, "coat, long");
    in[0].score = 0.25;
    snprintf(in[0].kind, sizeof in[0].kind, "label");
    in[1] = in[0];
    in[1].image[31] = '2';
    in[1].score = 0.875;
    snprintf(in[1].kind, sizeof in[1].kind, "duplicate");
    snprintf(in[1].partner, sizeof in[1].partner, "%032d", 1);
    snprintf(in[1].partner_jpeg, sizeof in[1].partner_jpeg, "%064d", 7);
    in[2] = in[0];
    in[2].image[31] = '3';
    in[2].score = 0.5;
    snprintf(in[2].kind, sizeof in[2].kind, "outlier");
    size_t len = 0;
    char *tsv = li_rows_tsv(in, 3, "ursa audit v1 dataset=d", &len);
    assert_non_null(tsv);
    assert_int_equal(strncmp(tsv, "# ursa audit v1 dataset=d\n", 26), 0);
    /* a damaged line and a line with a bad kind in the middle */
    char *mixed = malloc(len + 200);
    int o = snprintf(mixed, len + 200, "%s", tsv);
    o += snprintf(mixed + o, (size_t)(len + 200 - (size_t)o), "garbage\tline\n%032d\t-\ta\tb\t1\tevil\t-\t-\n", 9);
    li_row *out = NULL;
    size_t n = 0, bad = 0;
    assert_int_equal(li_rows_parse(mixed, (size_t)o, &out, &n, &bad), 0);
    assert_int_equal(n, 3);
    assert_int_equal(bad, 2);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(out[i].image, in[i].image);
        assert_string_equal(out[i].given, in[i].given);
        assert_string_equal(out[i].suggested, "coat, long");
        assert_string_equal(out[i].kind, in[i].kind);
        assert_string_equal(out[i].partner, in[i].partner);
        assert_string_equal(out[i].partner_jpeg, in[i].partner_jpeg);
        assert_true(out[i].score == in[i].score);
    }
    li_rows_sort(out, n);
    assert_string_equal(out[0].kind, "duplicate");
    assert_string_equal(out[1].kind, "outlier");
    assert_string_equal(out[2].kind, "label");
    free(out);
    free(mixed);
    free(tsv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(planted_flips),
        cmocka_unit_test(per_class_thresholds),
        cmocka_unit_test(prune_takes_the_count),
        cmocka_unit_test(bad_arguments),
        cmocka_unit_test(rows_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
