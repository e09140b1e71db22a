/* ursa-broker: the embedded Kafka for one machine.
 *
 * librdkafka's mock cluster speaks the real Kafka protocol on 127.0.0.1, so
 * the daemons, kcat and any Kafka client use it as they would a real
 * cluster. It keeps everything in memory: nothing survives this process.
 * It has no CreateTopics API, so ursa's topics are created here at start,
 * with as many replicas as there are brokers (up to 3).
 *
 * Fault drills: the broker takes one-line commands on a Unix socket,
 * <state-dir>/run/broker.sock (mode 0600; `ursa broker ...` sends them):
 *   down N [keep-leaders]  broker N stops answering; the partitions it
 *                            led and the groups it coordinated move to the
 *                            live brokers, as a real cluster's controller
 *                            would do (unless keep-leaders)
 *   up N                     broker N answers again
 *   leader TOPIC PART N      moves a partition's leader
 *   coordinator GROUP N      moves a consumer group's coordinator
 *   error APIKEY ERR COUNT   the next COUNT requests of APIKEY (0 produce,
 *                            1 fetch, ...) fail with error code ERR
 *   rtt N MS                 adds MS of round-trip delay to broker N
 *   status                   one line a broker: id, up or down
 * Each command is answered with one line, "ok ..." or "error: ...". */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "service.h"
#include "statedir.h"
#include "topics.h"
#include "util.h"

static const cfg_def broker_defs[] = {
    {"broker.partitions", CFG_INT, "4", 1, 256, "partitions of every ursa topic"},
    {"broker.brokers", CFG_INT, "1", 1, 9,
     "brokers in the cluster; topics get min(brokers, 3) replicas"},
    {NULL, 0, NULL, 0, 0, NULL}};

static const char usage[] =
    "usage: ursa-broker [settings]\n"
    "Runs an in-memory Kafka cluster on 127.0.0.1 (librdkafka's mock cluster),\n"
    "creates ursa's topics and writes its address to <state-dir>/broker.bootstrap.\n"
    "Stops on SIGTERM or SIGINT. Data lives in memory only.\n\n";

static atomic_int run = 1;

enum { MAX_BROKERS = 9 };

typedef struct {
    rd_kafka_mock_cluster_t *mc;
    const char *bootstrap;
    int nbrokers;
    int down[MAX_BROKERS + 1]; /* by broker id, 1..nbrokers */
} cluster;

/* The first live broker other than not, or -1. */
static int live_broker(const cluster *cl, int not, int nth) {
    int k = 0;
    for (int b = 1; b <= cl->nbrokers; b++)
        if (b != not && !cl->down[b] && k++ == nth) return b;
    for (int b = 1; b <= cl->nbrokers; b++)
        if (b != not && !cl->down[b]) return b;
    return -1;
}

/* Moves every partition led by broker from, and every ursa group's
 * coordinator, to the live brokers. Returns the partitions moved, or -1
 * when the metadata could not be read. */
static int move_off(cluster *cl, int from) {
    char es[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", cl->bootstrap, es, sizeof es);
    rd_kafka_conf_set(conf, "log_level", "0", es, sizeof es);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof es);
    if (!rk) return -1;
    const struct rd_kafka_metadata *md = NULL;
    int moved = -1;
    if (rd_kafka_metadata(rk, 1, NULL, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        moved = 0;
        for (int t = 0; t < md->topic_cnt; t++)
            for (int p = 0; p < md->topics[t].partition_cnt; p++) {
                const struct rd_kafka_metadata_partition *mp = &md->topics[t].partitions[p];
                if (mp->leader != from) continue;
                int to = live_broker(cl, from, moved);
                if (to > 0 && !rd_kafka_mock_partition_set_leader(cl->mc, md->topics[t].topic,
                                                                  mp->id, to))
                    moved++;
            }
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_destroy(rk);
    int k = 0;
    for (const topic_info *t = topics_all; t->name; t++)
        if (t->group) {
            int to = live_broker(cl, from, k++);
            if (to > 0) rd_kafka_mock_coordinator_set(cl->mc, "group", t->group, to);
        }
    return moved;
}

static int broker_id(const cluster *cl, const char *s, char *out, size_t n) {
    int b = s ? atoi(s) : 0;
    if (b < 1 || b > cl->nbrokers) {
        snprintf(out, n, "error: no broker \"%s\" (1..%d)", s ? s : "", cl->nbrokers);
        return -1;
    }
    return b;
}

/* Runs one control command; the answer goes to out. */
static void control(cluster *cl, char *line, char *out, size_t n) {
    char *save = NULL, *argv[6] = {0};
    int argc = 0;
    for (char *t = strtok_r(line, " \t\r\n", &save); t && argc < 6; t = strtok_r(NULL, " \t\r\n", &save))
        argv[argc++] = t;
    if (!argc) {
        snprintf(out, n, "error: empty command");
        return;
    }
    const char *cmd = argv[0];
    int b;
    if (!strcmp(cmd, "status")) {
        size_t o = (size_t)snprintf(out, n, "ok");
        for (int i = 1; i <= cl->nbrokers && o < n; i++)
            o += (size_t)snprintf(out + o, n - o, " %d:%s", i, cl->down[i] ? "down" : "up");
    } else if (!strcmp(cmd, "down") && argc >= 2) {
        if ((b = broker_id(cl, argv[1], out, n)) < 0) return;
        int keep = argc >= 3 && !strcmp(argv[2], "keep-leaders");
        if (!keep && live_broker(cl, b, 0) < 0) {
            snprintf(out, n, "error: broker %d is the last one up", b);
            return;
        }
        int moved = keep ? 0 : move_off(cl, b);
        rd_kafka_mock_broker_set_down(cl->mc, b);
        cl->down[b] = 1;
        snprintf(out, n, "ok broker %d down, %d leaders moved", b, moved);
        ULOG_WARN("event=broker_down broker=%d leaders_moved=%d", b, moved);
    } else if (!strcmp(cmd, "up") && argc >= 2) {
        if ((b = broker_id(cl, argv[1], out, n)) < 0) return;
        rd_kafka_mock_broker_set_up(cl->mc, b);
        cl->down[b] = 0;
        snprintf(out, n, "ok broker %d up", b);
        ULOG_INFO("event=broker_up broker=%d", b);
    } else if (!strcmp(cmd, "leader") && argc >= 4) {
        if ((b = broker_id(cl, argv[3], out, n)) < 0) return;
        rd_kafka_resp_err_t e =
            rd_kafka_mock_partition_set_leader(cl->mc, argv[1], atoi(argv[2]), b);
        snprintf(out, n, e ? "error: %s" : "ok leader of %s[%s] is broker %d",
                 e ? rd_kafka_err2str(e) : argv[1], argv[2], b);
    } else if (!strcmp(cmd, "coordinator") && argc >= 3) {
        if ((b = broker_id(cl, argv[2], out, n)) < 0) return;
        rd_kafka_mock_coordinator_set(cl->mc, "group", argv[1], b);
        snprintf(out, n, "ok coordinator of %s is broker %d", argv[1], b);
    } else if (!strcmp(cmd, "error") && argc >= 4) {
        int api = atoi(argv[1]), err = atoi(argv[2]), cnt = atoi(argv[3]);
        if (api < 0 || api > 100 || cnt < 1 || cnt > 100000) {
            snprintf(out, n, "error: error APIKEY ERR COUNT (COUNT 1..100000)");
            return;
        }
        rd_kafka_resp_err_t *errs = malloc(sizeof *errs * (size_t)cnt);
        for (int i = 0; errs && i < cnt; i++) errs[i] = (rd_kafka_resp_err_t)err;
        if (errs) rd_kafka_mock_push_request_errors_array(cl->mc, (int16_t)api, (size_t)cnt, errs);
        free(errs);
        snprintf(out, n, "ok the next %d requests of api %d fail with %s", cnt, api,
                 rd_kafka_err2name((rd_kafka_resp_err_t)err));
    } else if (!strcmp(cmd, "rtt") && argc >= 3) {
        if ((b = broker_id(cl, argv[1], out, n)) < 0) return;
        rd_kafka_mock_broker_set_rtt(cl->mc, b, atoi(argv[2]));
        snprintf(out, n, "ok broker %d rtt %d ms", b, atoi(argv[2]));
    } else {
        snprintf(out, n, "error: unknown command (down N, up N, leader TOPIC PART N, "
                         "coordinator GROUP N, error APIKEY ERR COUNT, rtt N MS, status)");
    }
}

/* The control socket; -1 (logged) when it cannot be made. */
static int control_listen(const char *path) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path) return -1;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    unlink(path);
    mode_t old = umask(077); /* the socket commands the cluster: owner only */
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 8) == 0;
    umask(old);
    if (!ok) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Serves one client: one command line in, one answer line out. */
static void control_serve(cluster *cl, int lfd) {
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) return;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char line[512], out[1024];
    size_t n = 0;
    while (n < sizeof line - 1) {
        ssize_t r = recv(fd, line + n, sizeof line - 1 - n, 0);
        if (r <= 0) break;
        n += (size_t)r;
        if (memchr(line, '\n', n)) break;
    }
    line[n] = '\0';
    control(cl, line, out, sizeof out);
    size_t ol = strlen(out);
    out[ol++] = '\n';
    util_send_all(fd, out, ol);
    close(fd);
}

int main(int argc, char **argv) {
    const cfg_def *const tables[] = {cfg_defs_base, broker_defs, NULL};
    cfg *c;
    int argi,
        rc = service_setup("broker", SERVICE_NO_BEAT, usage, tables, argc, argv, &c, &argi);
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
    cluster cl = {.mc = mc, .nbrokers = (int)cfg_int(c, "broker.brokers")};
    int replicas = cl.nbrokers < 3 ? cl.nbrokers : 3;
    for (const topic_info *t = topics_all; t->name; t++) {
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(mc, t->name, parts, replicas);
        if (err) {
            ULOG_ERROR("event=topic_create_failed topic=%s err=%s", t->name,
                       rd_kafka_err2name(err));
            rc = 1;
        }
    }
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    cl.bootstrap = bootstrap;
    char sock[4096];
    int lfd = -1;
    if (!rc && statedir_path(c, "run/broker.sock", sock, sizeof sock) == URSA_OK) {
        char rundir[4096];
        if (statedir_path(c, "run", rundir, sizeof rundir) == URSA_OK) util_mkdirs(rundir);
        if ((lfd = control_listen(sock)) < 0)
            ULOG_WARN("event=control_socket_failed path=%s err=\"%s\"", sock, strerror(errno));
    }
    char line[512];
    snprintf(line, sizeof line, "%s\n", bootstrap);
    if (!rc && (util_mkdirs_mode(statedir_root(c), 0700) ||
                statedir_path(c, "broker.bootstrap", path, sizeof path) ||
                util_write_file_atomic(path, line, strlen(line)))) {
        ULOG_ERROR("event=start_failed err=\"cannot write %s/broker.bootstrap\"",
                   statedir_root(c));
        rc = 1;
    }
    if (!rc) {
        ULOG_INFO("event=started bootstrap=%s brokers=%d replicas=%d topics=%zu partitions=%d "
                  "control=%s storage=memory-only note=\"nothing survives this process; "
                  "use real Kafka for durability\"",
                  bootstrap, cl.nbrokers, replicas, topics_count(), parts,
                  lfd >= 0 ? sock : "none");
        while (run) {
            struct pollfd pf = {lfd, POLLIN, 0};
            if (lfd < 0) util_sleep_ms(200);
            else if (poll(&pf, 1, 200) > 0) control_serve(&cl, lfd);
        }
        if (lfd >= 0) {
            close(lfd);
            unlink(sock);
        }
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
