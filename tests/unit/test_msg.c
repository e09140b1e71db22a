/* Unit tests of msg.c and the generated schema: headers, ids, round trips. */
#include "test.h"
#include "msg.h"

static void header_fields_and_unique_ids(void **state) {
    (void)state;
    Ursa__Header h;
    char id[33], id2[33];
    msg_header_init(&h, id, "bears", NULL);
    assert_int_equal(h.schema_version, MSG_SCHEMA_VERSION);
    assert_int_equal(strlen(h.id), 32);
    assert_string_equal(h.dataset, "bears");
    assert_string_equal(h.job_id, "");
    assert_true(h.ts_ms > 1700000000000LL);
    msg_new_id(id2);
    assert_string_not_equal(id, id2);
    char err[128];
    assert_int_equal(msg_check_header(&h, err, sizeof err), URSA_OK);
    h.schema_version = 99;
    assert_int_equal(msg_check_header(&h, err, sizeof err), URSA_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "99"));
    assert_int_equal(msg_check_header(NULL, err, sizeof err), URSA_ERR_INVALID);
}

static void crawl_request_round_trip(void **state) {
    (void)state;
    Ursa__CrawlRequest r = URSA__CRAWL_REQUEST__INIT;
    Ursa__Header h;
    char id[33];
    msg_header_init(&h, id, "bears", NULL);
    r.header = &h;
    r.url = "http://example.com/a.jpg";
    r.label = "grizzly";
    r.attempt = 2;
    void *buf;
    size_t len;
    assert_int_equal(msg_pack(&r.base, &buf, &len), URSA_OK);
    Ursa__CrawlRequest *d = ursa__crawl_request__unpack(NULL, len, buf);
    assert_non_null(d);
    assert_string_equal(d->url, r.url);
    assert_string_equal(d->label, "grizzly");
    assert_int_equal(d->attempt, 2);
    assert_string_equal(d->header->id, id);
    assert_string_equal(d->header->dataset, "bears");
    ursa__crawl_request__free_unpacked(d, NULL);
    /* garbage does not unpack */
    assert_null(ursa__crawl_request__unpack(NULL, 5, (const uint8_t *)"\xff\xff\xff\xff\xff"));
    free(buf);
}

static void train_job_with_stages_round_trip(void **state) {
    (void)state;
    Ursa__TrainJob j = URSA__TRAIN_JOB__INIT;
    Ursa__TrainStage s1 = URSA__TRAIN_STAGE__INIT, s2 = URSA__TRAIN_STAGE__INIT;
    s1.epochs = 4;
    s1.lr_min = s1.lr_max = 1e-3;
    s2.epochs = 2;
    s2.lr_min = 3e-5;
    s2.lr_max = 3e-4;
    s2.unfreeze = 1;
    Ursa__TrainStage *stages[] = {&s1, &s2};
    j.stages = stages;
    j.n_stages = 2;
    j.arch = "resnet34";
    void *buf;
    size_t len;
    assert_int_equal(msg_pack(&j.base, &buf, &len), URSA_OK);
    Ursa__TrainJob *d = ursa__train_job__unpack(NULL, len, buf);
    assert_non_null(d);
    assert_int_equal(d->n_stages, 2);
    assert_true(d->stages[1]->unfreeze);
    assert_true(d->stages[1]->lr_min == 3e-5);
    assert_string_equal(d->arch, "resnet34");
    ursa__train_job__free_unpacked(d, NULL);
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(header_fields_and_unique_ids),
        cmocka_unit_test(crawl_request_round_trip),
        cmocka_unit_test(train_job_with_stages_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
