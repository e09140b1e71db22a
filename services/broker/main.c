/* ursa-broker: the embedded Kafka for one machine.
 *
 * librdkafka's mock cluster speaks the real Kafka protocol on 127.0.0.1, so
 * the daemons, kcat and any Kafka client use it as they would a real
 * cluster. It keeps everything in memory: nothing survives this process.
 * It has no CreateTopics API, so ursa's topics are created here at start. */
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "service.h"
#include "statedir.h"
#include "topics.h"
#include "util.h"

static const cfg_def broker_defs[] = {
    {"broker.partitions", CFG_INT, "4", 1, 256, "partitions of every ursa topic"},
    {"broker.brokers", CFG_INT, "1", 1, 9, "mock brokers in the cluster"},
    {NULL, 0, NULL, 0, 0, NULL}};

static const char usage[] =
    "usage: ursa-broker [settings]\n"
    "Runs an in-memory Kafka cluster on 127.0.0.1 (librdkafka's mock cluster),\n"
    "creates ursa's topics and writes its address to <state-dir>/broker.bootstrap.\n"
    "Stops on SIGTERM or SIGINT. Data lives in memory only.\n\n";

static atomic_int run = 1;

int main(int argc, char **argv) {
    const cfg_def *const tables[] = {cfg_defs_base, broker_defs, NULL};
    cfg *c;
    int argi, rc = service_setup("broker", usage, tables, argc, argv, &c, &argi);
    if (rc >= 0) return rc;
    if (argi < argc) {
        fprintf(stderr, "ursa-broker: unexpected argument \"%s\"\n", argv[argi]);
        cfg_destroy(c);
        return 2;
    }
    service_signals(&run);
    rc = 0;

    char errstr[512], path[4096];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, NULL);
    rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof errstr);
    /* The handle only hosts the mock cluster; it never connects anywhere. */
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        ULOG_ERROR("event=start_failed err=\"%s\"", errstr);
        cfg_destroy(c);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc =
        rd_kafka_mock_cluster_new(rk, (int)cfg_int(c, "broker.brokers"));
    if (!mc) {
        ULOG_ERROR("event=start_failed err=\"cannot create mock cluster\"");
        rd_kafka_destroy(rk);
        cfg_destroy(c);
        return 1;
    }
    int parts = (int)cfg_int(c, "broker.partitions");
    for (const topic_info *t = topics_all; t->name; t++) {
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(mc, t->name, parts, 1);
        if (err) {
            ULOG_ERROR("event=topic_create_failed topic=%s err=%s", t->name,
                       rd_kafka_err2name(err));
            rc = 1;
        }
    }
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    char line[512];
    snprintf(line, sizeof line, "%s\n", bootstrap);
    if (!rc && (util_mkdirs(statedir_root(c)) ||
                statedir_path(c, "broker.bootstrap", path, sizeof path) ||
                util_write_file_atomic(path, line, strlen(line)))) {
        ULOG_ERROR("event=start_failed err=\"cannot write %s/broker.bootstrap\"",
                   statedir_root(c));
        rc = 1;
    }
    if (!rc) {
        ULOG_INFO("event=started bootstrap=%s topics=%zu partitions=%d "
                  "storage=memory-only note=\"nothing survives this process; "
                  "use real Kafka for durability\"",
                  bootstrap, topics_count(), parts);
        while (run) util_sleep_ms(200);
        ULOG_INFO("event=stopping");
        /* Remove our address only if it is still ours. */
        char *cur = NULL;
        if (util_read_file(path, 4096, &cur, NULL) == URSA_OK && strcmp(cur, line) == 0)
            unlink(path);
        free(cur);
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    cfg_destroy(c);
    ULOG_INFO("event=stopped");
    return rc;
}
