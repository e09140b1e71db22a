/* topics_cmd.c: `ursa topics [--create]` through librdkafka's Admin API. */
#include "topics_cmd.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <string.h>

#include "statedir.h"
#include "topics.h"

const cfg_def topics_cmd_defs[] = {
    {"create", CFG_BOOL, "false", 1, 0, "create the topics that are missing"},
    {"partitions", CFG_INT, "4", 1, 10000, "partitions of a created topic"},
    {"replication", CFG_INT, "1", 1, 16, "replication factor of a created topic"},
    {NULL, 0, NULL, 0, 0, NULL}};

int topics_cmd(const cfg *c, int argc, char **argv) {
    (void)argc; /* no positional arguments */
    (void)argv;
    char bs[512], err[512];
    if (statedir_kafka_bootstrap(c, bs, sizeof bs, err, sizeof err)) {
        fprintf(stderr, "ursa topics: %s\n", err);
        return 1;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bs, err, sizeof err);
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    for (size_t i = 0; i < cfg_passthrough_count(c); i++) {
        const char *name, *value;
        cfg_passthrough_get(c, i, &name, &value);
        if (rd_kafka_conf_set(conf, name + 6, value, err, sizeof err) != RD_KAFKA_CONF_OK) {
            fprintf(stderr, "ursa topics: --%s: %s\n", name, err);
            rd_kafka_conf_destroy(conf);
            return 2;
        }
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "ursa topics: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, 10000);
    if (e) {
        fprintf(stderr, "ursa topics: cannot reach Kafka at %s: %s\n", bs, rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        return 1;
    }
    size_t nmissing = 0;
    const char *missing[64];
    for (const topic_info *t = topics_all; t->name; t++) {
        int parts = -1;
        for (int i = 0; i < md->topic_cnt; i++)
            if (!strcmp(md->topics[i].topic, t->name) && !md->topics[i].err)
                parts = md->topics[i].partition_cnt;
        if (parts < 0) {
            if (nmissing < 64) missing[nmissing++] = t->name;
            printf("%-24s missing\n", t->name);
        } else {
            printf("%-24s %d partitions  %s, keyed by %s\n", t->name, parts, t->message, t->key);
        }
    }
    rd_kafka_metadata_destroy(md);
    int rc = 0;
    if (!cfg_bool(c, "create") || !nmissing) {
        rd_kafka_destroy(rk);
        return cfg_bool(c, "create") || !nmissing ? 0 : 1;
    }
    rd_kafka_NewTopic_t *nt[64];
    for (size_t i = 0; i < nmissing; i++) {
        nt[i] = rd_kafka_NewTopic_new(missing[i], (int)cfg_int(c, "partitions"),
                                      (int)cfg_int(c, "replication"), err, sizeof err);
        if (!nt[i]) {
            fprintf(stderr, "ursa topics: %s: %s\n", missing[i], err);
            rd_kafka_destroy(rk);
            return 2;
        }
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, nt, nmissing, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    const rd_kafka_CreateTopics_result_t *res = ev ? rd_kafka_event_CreateTopics_result(ev) : NULL;
    if (!res) {
        fprintf(stderr, "ursa topics: CreateTopics failed: %s\n",
                ev ? rd_kafka_event_error_string(ev) : "timed out");
        rc = 1;
    } else {
        size_t cnt;
        const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &cnt);
        for (size_t i = 0; i < cnt; i++) {
            rd_kafka_resp_err_t te = rd_kafka_topic_result_error(tr[i]);
            if (te && te != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                fprintf(stderr, "ursa topics: %s: %s\n", rd_kafka_topic_result_name(tr[i]),
                        rd_kafka_topic_result_error_string(tr[i]));
                rc = 1;
            } else {
                printf("created %s\n", rd_kafka_topic_result_name(tr[i]));
            }
        }
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy_array(nt, nmissing);
    rd_kafka_destroy(rk);
    return rc;
}
