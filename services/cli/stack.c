/* stack.c: starting, stopping and inspecting the embedded stack.
 *
 * Order matters: Redis first (the daemons keep state there), then the broker
 * (its address changes every start, as the mock cluster picks its own port),
 * then the daemons. A daemon started before the current broker would talk to
 * a dead address, so starting a broker restarts the daemons too.
 *
 * `ursa up` never half-starts: a daemon counts as started once its
 * heartbeat is in Redis, and when one exits or stays silent instead, up
 * stops everything it started itself and says why. The inference server
 * and the console move off their default ports when another process holds
 * them (a second stack on the same host); a port set explicitly stays, and
 * up fails when it is taken. */
#include "stack.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis.h>
#include <librdkafka/rdkafka.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include "blob.h"
#include "heartbeats.h"
#include "jobs.h"
#include "rstore.h"
#include "service.h"
#include "spawn.h"
#include "statedir.h"
#include "util.h"

const cfg_def stack_defs[] = {
    {"redis.server", CFG_STR, "redis-server", 1, 0,
     "redis-server binary for the embedded stack"},
    {"stack.timeout-ms", CFG_INT, "15000", 100, 600000,
     "how long up waits for health and down waits for a clean exit"},
    {NULL, 0, NULL, 0, 0, NULL}};

const cfg_def stack_up_defs[] = {
    {"inference.port", CFG_INT, SERVICE_INFERENCE_PORT, 0, 65535,
     "ursa-inference's port; the default moves to a free port when another process holds it, "
     "a port set here does not (up fails); 0: any free port"},
    {"console.port", CFG_INT, SERVICE_CONSOLE_PORT, 0, 65535,
     "ursa-console's port, moved or not as inference.port"},
    {NULL, 0, NULL, 0, 0, NULL}};

const char *const stack_daemons[] = {"crawler", "verifier", "trainer", "inference", "console",
                                     NULL};

typedef struct {
    char root[PATH_MAX]; /* absolute state dir */
    char bindir[PATH_MAX];
    int timeout_ms;
    const char *redis_url; /* redis.url: the user's Redis, passed on to the daemons */
} stack;

/* Fills s for the state dir; create: make it and its subdirectories
 * (up, down), else only find it (status). */
static int stack_locate(const cfg *c, stack *s, int create) {
    const char *root = statedir_root(c);
    if (create && util_mkdirs_mode(root, 0700) != URSA_OK) {
        fprintf(stderr, "ursa: cannot create state dir %s: %s\n", root, strerror(errno));
        return -1;
    }
    if (!realpath(root, s->root)) {
        fprintf(stderr, "ursa: %s: %s\n", root, strerror(errno));
        return -1;
    }
    ssize_t n = readlink("/proc/self/exe", s->bindir, sizeof s->bindir - 1);
    if (n < 0) n = 0;
    s->bindir[n] = '\0';
    char *slash = strrchr(s->bindir, '/');
    if (slash) *slash = '\0';
    s->timeout_ms = (int)cfg_int(c, "stack.timeout-ms");
    s->redis_url = cfg_str(c, "redis.url");
    char d[PATH_MAX + 16];
    const char *subs[] = {"run", "log", "redis", NULL};
    for (int i = 0; create && subs[i]; i++) {
        snprintf(d, sizeof d, "%s/%s", s->root, subs[i]);
        if (util_mkdirs(d) != URSA_OK) {
            fprintf(stderr, "ursa: cannot create %s\n", d);
            return -1;
        }
    }
    return 0;
}

static int stack_init(const cfg *c, stack *s) { return stack_locate(c, s, 1); }

static void path_of(const stack *s, char *out, size_t n, const char *fmt,
                    const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, fmt, name);
    snprintf(out, n, "%s/%s", s->root, rel);
}

/* 1 if pid has exited: reaped if it is our child, or a zombie (state Z in
 * /proc/PID/stat) waiting for another parent. */
static int gone(pid_t pid) {
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) return 1;
    if (kill(pid, 0) != 0) return 1;
    char proc[64], *stat = NULL;
    snprintf(proc, sizeof proc, "/proc/%d/stat", (int)pid);
    if (util_read_file(proc, 1 << 16, &stat, NULL) != URSA_OK) return 1;
    const char *paren = strrchr(stat, ')'); /* the name may hold spaces */
    int zombie = paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
    free(stat);
    return zombie;
}

/* The pid in run/<name>.pid if that process is alive and still runs exe
 * (so a recycled pid is not mistaken for ours); else 0. */
static pid_t alive_pid(const stack *s, const char *name, const char *exe) {
    char path[PATH_MAX + 64], *data = NULL;
    path_of(s, path, sizeof path, "run/%s.pid", name);
    if (util_read_file(path, 64, &data, NULL) != URSA_OK) return 0;
    pid_t pid = (pid_t)atol(data);
    free(data);
    if (pid <= 0 || gone(pid)) return 0;
    char proc[64], *cmd = NULL;
    size_t len = 0;
    snprintf(proc, sizeof proc, "/proc/%d/cmdline", (int)pid);
    if (util_read_file(proc, 1 << 16, &cmd, &len) != URSA_OK) return 0;
    const char *base = strrchr(exe, '/');
    base = base ? base + 1 : exe;
    int match = len > 0 && strstr(cmd, base) != NULL;
    free(cmd);
    return match ? pid : 0;
}

/* Starts argv detached (own session, stdin /dev/null, output to the log) and
 * records its pid. Returns the pid or -1. */
static pid_t spawn(const stack *s, const char *name, char *const argv[]) {
    char logp[PATH_MAX + 64], pidp[PATH_MAX + 64];
    path_of(s, logp, sizeof logp, "log/%s.log", name);
    path_of(s, pidp, sizeof pidp, "run/%s.pid", name);
    /* The embedded stack's processes find each other through the state
     * dir; addresses exported from `ursa env` would be stale after a
     * broker restart. */
    static const char *const unset[] = {"URSA_KAFKA_BOOTSTRAP", "URSA_REDIS_URL", NULL};
    /* ... but a Redis of the user's (redis.url) is passed on in the
     * environment, never on a command line (ps shows those), as
     * URSA_REDIS_URL (see start_daemons), password and all */
    static const char *const unset_kafka[] = {"URSA_KAFKA_BOOTSTRAP", NULL};
    pid_t pid = spawn_exec(argv[0], argv,
                           &(spawn_opts){.detach = 1, .log = logp,
                                         .unset = *s->redis_url ? unset_kafka : unset},
                           NULL);
    if (pid < 0) return -1;
    char buf[32];
    snprintf(buf, sizeof buf, "%d\n", (int)pid);
    if (util_write_file_atomic(pidp, buf, strlen(buf)) != URSA_OK)
        fprintf(stderr, "ursa: cannot write %s\n", pidp);
    return pid;
}


static int read_port(const stack *s) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/redis.port", s->root);
    int port = util_read_int(path);
    return port > 0 && port < 65536 ? port : 0;
}

/* The password of the Redis ursa up runs, in <state-dir>/redis.password
 * (mode 0600): made once (128 random bits) when create, then kept, so that
 * clients and the restarted server agree. 0 on success; without create, a
 * missing file leaves pw "" (a stack from before there was one). */
static int redis_password(const stack *s, char *pw, size_t n, int create) {
    char path[PATH_MAX + 64], *data = NULL;
    snprintf(path, sizeof path, "%s/redis.password", s->root);
    pw[0] = '\0';
    if (util_read_file(path, 256, &data, NULL) == URSA_OK) {
        data[strcspn(data, "\r\n")] = '\0';
        snprintf(pw, n, "%s", data);
        free(data);
        if (pw[0]) return 0;
    }
    if (!create) return 0;
    char fresh[33];
    if (n < sizeof fresh || util_random_hex(fresh, 16) ||
        util_write_file_private(path, fresh, strlen(fresh)) != URSA_OK) {
        fprintf(stderr, "ursa: cannot make %s for redis\n", path);
        return -1;
    }
    snprintf(pw, n, "%s", fresh);
    return 0;
}

/* PING with a short timeout, with the stack's password: 1 if Redis answers
 * PONG; with any, 1 if anything answers at all (the port is taken). */
static int redis_ping_as(const stack *s, int port, double *ms, int any) {
    struct timeval tv = {1, 0};
    int64_t t0 = util_mono_ms();
    redisContext *r = redisConnectWithTimeout("127.0.0.1", port, tv);
    int ok = 0;
    char pw[80];
    redis_password(s, pw, sizeof pw, 0);
    if (r && !r->err) {
        redisSetTimeout(r, tv);
        redisReply *rep = NULL;
        int authed = 1;
        if (pw[0] && !any) {
            rep = redisCommand(r, "AUTH %s", pw);
            authed = rep && rep->type == REDIS_REPLY_STATUS;
            if (rep) freeReplyObject(rep);
        }
        rep = authed ? redisCommand(r, "PING") : NULL;
        ok = rep && (any || (rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0));
        if (rep) freeReplyObject(rep);
    }
    if (r) redisFree(r);
    if (ms) *ms = (double)(util_mono_ms() - t0);
    return ok;
}
static int redis_ping(const stack *s, int port, double *ms) { return redis_ping_as(s, port, ms, 0); }

static int read_bootstrap(const stack *s, char *out, size_t n) {
    char path[PATH_MAX + 64], *data = NULL;
    snprintf(path, sizeof path, "%s/broker.bootstrap", s->root);
    if (util_read_file(path, 4096, &data, NULL) != URSA_OK) return 0;
    data[strcspn(data, "\r\n")] = '\0';
    snprintf(out, n, "%s", data);
    free(data);
    return out[0] != '\0';
}

rd_kafka_t *stack_kafka_handle(const char *bootstrap, rd_kafka_type_t type,
                               const char *group) {
    char es[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, es, sizeof es);
    rd_kafka_conf_set(conf, "log_level", "0", es, sizeof es);
    if (group) {
        rd_kafka_conf_set(conf, "group.id", group, es, sizeof es);
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", es, sizeof es);
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, es, sizeof es);
    if (!rk) rd_kafka_conf_destroy(conf);
    return rk;
}

int stack_broker_topics(const char *bootstrap, int timeout_ms) {
    rd_kafka_t *rk = stack_kafka_handle(bootstrap, RD_KAFKA_PRODUCER, NULL);
    if (!rk) return -1;
    const struct rd_kafka_metadata *md = NULL;
    int n = -1;
    if (rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        n = md->topic_cnt;
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_destroy(rk);
    return n;
}

static int start_redis(const stack *s, const cfg *c) {
    int port = read_port(s); /* keep the address stable across restarts */
    if (!port || redis_ping_as(s, port, NULL, 1)) port = util_free_port();
    if (port <= 0) {
        fprintf(stderr, "ursa: no free port for redis\n");
        return -1;
    }
    char conf[PATH_MAX + 64], body[PATH_MAX * 4], pf[PATH_MAX + 64], pw[80];
    if (redis_password(s, pw, sizeof pw, 1)) return -1;
    snprintf(conf, sizeof conf, "%s/redis/redis.conf", s->root);
    /* appendfsync everysec: a write is in the kernel before Redis replies, so
     * killing Redis loses nothing acknowledged; only a machine crash could. */
    snprintf(body, sizeof body,
             "# written by `ursa up`\n"
             "port %d\nbind 127.0.0.1\nprotected-mode yes\n"
             "dir %s/redis\nappendonly yes\nappendfsync everysec\n"
             "save \"\"\ndaemonize no\nlogfile \"\"\n"
             "# clients give it: redis.url's password, or <state-dir>/redis.password\n"
             "requirepass %s\n",
             port, s->root, pw);
    if (util_write_file_private(conf, body, strlen(body)) != URSA_OK) {
        fprintf(stderr, "ursa: cannot write %s\n", conf);
        return -1;
    }
    snprintf(pf, sizeof pf, "%s/redis.port", s->root);
    char pbuf[16];
    snprintf(pbuf, sizeof pbuf, "%d\n", port);
    util_write_file_atomic(pf, pbuf, strlen(pbuf));
    char *argv[] = {(char *)cfg_str(c, "redis.server"), conf, NULL};
    pid_t pid = spawn(s, "redis", argv);
    if (pid < 0) return -1;
    int64_t deadline = util_mono_ms() + s->timeout_ms;
    while (util_mono_ms() < deadline) {
        if (redis_ping(s, port, NULL)) {
            printf("started redis    pid=%d port=%d (AOF under %s/redis)\n", (int)pid,
                   port, s->root);
            return 0;
        }
        if (gone(pid)) break;
        util_sleep_ms(50);
    }
    fprintf(stderr, "ursa: redis-server did not become healthy; see %s/log/redis.log\n",
            s->root);
    kill(pid, SIGKILL);
    return -1;
}

static int start_broker(const stack *s) {
    char exe[PATH_MAX + 32], bs[512];
    snprintf(exe, sizeof exe, "%s/ursa-broker", s->bindir);
    char bsp[PATH_MAX + 64];
    snprintf(bsp, sizeof bsp, "%s/broker.bootstrap", s->root);
    unlink(bsp); /* a stale address must not look healthy */
    char logp[PATH_MAX + 64];
    path_of(s, logp, sizeof logp, "log/%s.log", "broker");
    char *argv[] = {exe, "--state-dir", (char *)s->root, "--log.file", logp, NULL};
    pid_t pid = spawn(s, "broker", argv);
    if (pid < 0) return -1;
    int64_t deadline = util_mono_ms() + s->timeout_ms;
    while (util_mono_ms() < deadline) {
        if (read_bootstrap(s, bs, sizeof bs) && stack_broker_topics(bs, 1000) > 0) {
            printf("started broker   pid=%d bootstrap=%s (in memory only)\n", (int)pid, bs);
            return 0;
        }
        if (gone(pid)) break;
        util_sleep_ms(50);
    }
    fprintf(stderr, "ursa: ursa-broker did not become healthy; see %s/log/broker.log\n",
            s->root);
    kill(pid, SIGKILL);
    return -1;
}

/* How `ursa up` gives a daemon its port: the inference server and the
 * console have their own (own_port names the setting); the rest get a
 * metrics port picked here. */
static const struct {
    const char *name, *own_port;
} port_of[] = {{"inference", "inference.port"}, {"console", "console.port"}, {NULL, NULL}};

/* One daemon `ursa up` starts. */
typedef struct {
    const char *name;
    char exe[PATH_MAX + 32];
    char flag[64], port[16]; /* the port flag it gets, or "" */
    int metrics_port;        /* written to run/<name>.metrics-port once it runs */
    off_t log_at;            /* its log's size before it started */
    pid_t pid;
    int up;                  /* its heartbeat is in Redis */
} plan;

/* 1 when nothing listens on port, at any address. */
static int port_free(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    int one = 1; /* a closed connection in TIME_WAIT holds nothing */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* Decides p's port flag. -1 with why when its port was set explicitly
 * and another process holds it. */
static int plan_port(const cfg *c, plan *p, char *why, size_t wn) {
    const char *own = NULL;
    for (int i = 0; port_of[i].name; i++)
        if (!strcmp(port_of[i].name, p->name)) own = port_of[i].own_port;
    if (!own) {
        p->metrics_port = util_free_port();
        if (p->metrics_port <= 0) {
            snprintf(why, wn, "no free port for %s's metrics", p->name);
            return -1;
        }
        snprintf(p->flag, sizeof p->flag, "--%s.metrics-port", p->name);
        snprintf(p->port, sizeof p->port, "%d", p->metrics_port);
        return 0;
    }
    int port = (int)cfg_int(c, own), taken = port && !port_free(port);
    if (taken && cfg_given(c, own)) {
        snprintf(why, wn, "%s %d is taken by another process (set explicitly, so not moved): "
                          "free it or choose another", own, port);
        return -1;
    }
    if (taken) {
        int moved = util_free_port();
        if (moved <= 0) {
            snprintf(why, wn, "%s %d is taken and no free port is left", own, port);
            return -1;
        }
        printf("%-16s port %d is taken; using %d\n", p->name, port, moved);
        port = moved;
    }
    if (taken || cfg_given(c, own)) { /* a flag to `ursa up` reaches the daemon only so */
        snprintf(p->flag, sizeof p->flag, "--%s", own);
        snprintf(p->port, sizeof p->port, "%d", port);
    }
    return 0;
}

/* The last line p wrote to its log since it started (its reason for
 * exiting), or "" when it wrote none. */
static void last_words(const stack *s, const plan *p, char *out, size_t n) {
    char logp[PATH_MAX + 64], *data = NULL;
    size_t len = 0;
    out[0] = '\0';
    path_of(s, logp, sizeof logp, "log/%s.log", p->name);
    if (util_read_file(logp, 1 << 24, &data, &len) != URSA_OK) return;
    size_t from = (size_t)p->log_at <= len ? (size_t)p->log_at : 0;
    while (len > from && (data[len - 1] == '\n' || data[len - 1] == '\r')) len--;
    data[len] = '\0';
    const char *nl = strrchr(data + from, '\n');
    snprintf(out, n, "%s", nl ? nl + 1 : data + from);
    free(data);
}

/* Starts the daemons of ps together and waits until each has sent its
 * first heartbeat (it has its settings, its ports, Redis, and runs its
 * loop). -1 with why when one was refused its port, exited at start or
 * stayed silent for stack.timeout-ms; *nstarted says how many of ps were
 * started (to be stopped again). */
static int start_daemons(const stack *s, const cfg *c, plan *ps, int n, int *nstarted,
                         char *why, size_t wn) {
    *nstarted = 0;
    for (int i = 0; i < n; i++) {
        snprintf(ps[i].exe, sizeof ps[i].exe, "%s/ursa-%s", s->bindir, ps[i].name);
        if (plan_port(c, &ps[i], why, wn)) return -1;
    }
    if (*s->redis_url) { /* the user's Redis, with its password (spawn() keeps it) */
        char url[1200], err[512];
        if (statedir_redis_url(c, url, sizeof url, err, sizeof err)) {
            snprintf(why, wn, "%s", err);
            return -1;
        }
        setenv("URSA_REDIS_URL", url, 1);
        explicit_bzero(url, sizeof url);
    }
    for (int i = 0; i < n; i++) {
        plan *p = &ps[i];
        char *argv[10] = {p->exe, "--state-dir", (char *)s->root}, logp[PATH_MAX + 64];
        int k = 3;
        if (p->flag[0]) {
            argv[k++] = p->flag;
            argv[k++] = p->port;
        }
        char stale[PATH_MAX + 64]; /* a port file from before must not pass for this run's */
        path_of(s, stale, sizeof stale, "run/%s.port", p->name);
        unlink(stale);
        path_of(s, logp, sizeof logp, "log/%s.log", p->name);
        argv[k++] = "--log.file"; /* rotated by the daemon (log.max-mb, log.keep) */
        argv[k++] = logp;
        struct stat st;
        p->log_at = stat(logp, &st) == 0 ? st.st_size : 0;
        if ((p->pid = spawn(s, p->name, argv)) < 0) {
            snprintf(why, wn, "cannot start %s: %s", p->name, strerror(errno));
            return -1;
        }
        (*nstarted)++;
    }
    char url[600], err[512], host[256] = "";
    gethostname(host, sizeof host - 1);
    rstore *r = NULL;
    if (statedir_redis_url(c, url, sizeof url, err, sizeof err) == URSA_OK &&
        (r = rstore_new(url, 1000, err, sizeof err)))
        rstore_set_retry_ms(r, 500);
    int64_t deadline = util_mono_ms() + s->timeout_ms;
    for (int left = n; left;) {
        for (int i = 0; i < n; i++) {
            if (ps[i].up || !gone(ps[i].pid)) continue;
            char words[400];
            last_words(s, &ps[i], words, sizeof words);
            snprintf(why, wn, "%s exited at start: %s (%s/log/%s.log)", ps[i].name,
                     words[0] ? words : "no message", s->root, ps[i].name);
            rstore_destroy(r);
            return -1;
        }
        hb_instance *in = NULL;
        size_t ni = 0;
        if (r && hb_list(r, util_now_ms(), &in, &ni) == URSA_OK)
            for (int i = 0; i < n; i++)
                for (size_t k = 0; k < ni && !ps[i].up; k++)
                    if (in[k].live && in[k].pid == ps[i].pid && !strcmp(in[k].host, host) &&
                        !strcmp(in[k].service, ps[i].name))
                        ps[i].up = 1, left--;
        hb_list_free(in, ni);
        if (!left) break;
        if (util_mono_ms() >= deadline) {
            int i = 0;
            while (ps[i].up) i++;
            snprintf(why, wn, "%s sent no heartbeat within %d ms (stack.timeout-ms; Redis: %s); "
                              "see %s/log/%s.log",
                     ps[i].name, s->timeout_ms, r ? rstore_last_error(r) : err, s->root,
                     ps[i].name);
            rstore_destroy(r);
            return -1;
        }
        util_sleep_ms(50);
    }
    rstore_destroy(r);
    for (int i = 0; i < n; i++) {
        const plan *p = &ps[i];
        if (!p->metrics_port) {
            printf("started %-8s pid=%d\n", p->name, (int)p->pid);
            continue;
        }
        char pf[PATH_MAX + 64], buf[16];
        path_of(s, pf, sizeof pf, "run/%s.metrics-port", p->name);
        util_write_file_atomic(pf, buf, (size_t)snprintf(buf, sizeof buf, "%d\n", p->metrics_port));
        printf("started %-8s pid=%d metrics=http://127.0.0.1:%d/metrics\n", p->name, (int)p->pid,
               p->metrics_port);
    }
    return 0;
}

/* Stops processes together: sig to each, then waits for all of them up to
 * wait_ms, then SIGKILLs whoever is left. Names and exes are parallel arrays;
 * a process not running is skipped. */
static void stop_all(const stack *s, const char *const *names, const char *const *exes,
                     int n, int sig, int wait_ms) {
    pid_t pids[8];
    for (int i = 0; i < n; i++) {
        pids[i] = alive_pid(s, names[i], exes[i]);
        if (pids[i]) kill(pids[i], sig);
    }
    int64_t deadline = util_mono_ms() + wait_ms;
    for (;;) {
        int left = 0;
        for (int i = 0; i < n; i++) left += pids[i] && !gone(pids[i]);
        if (!left || util_mono_ms() >= deadline) break;
        util_sleep_ms(20);
    }
    for (int i = 0; i < n; i++) {
        char pidp[PATH_MAX + 64];
        path_of(s, pidp, sizeof pidp, "run/%s.pid", names[i]);
        if (pids[i] && !gone(pids[i])) {
            fprintf(stderr, "ursa: %s (pid %d) ignored SIGTERM for %d ms; killing it\n",
                    names[i], (int)pids[i], wait_ms);
            kill(pids[i], SIGKILL);
            while (!gone(pids[i])) util_sleep_ms(20);
        }
        unlink(pidp);
        if (pids[i]) printf("stopped %-8s pid=%d\n", names[i], (int)pids[i]);
    }
}

/* Serialises up/down on one state dir. Returns the lock fd or -1. */
static int lock_state(const stack *s) {
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/run/stack.lock", s->root);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0 && flock(fd, LOCK_EX) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Where the console is and how to log in, once it wrote its port. */
static void print_console(const stack *s) {
    char pf[PATH_MAX + 32], *port = NULL;
    size_t len;
    snprintf(pf, sizeof pf, "%s/run/console.port", s->root);
    for (int i = 0; i < 20 && util_read_file(pf, 64, &port, &len) != URSA_OK; i++)
        util_sleep_ms(100);
    if (port && atoi(port) > 0)
        printf("console          http://127.0.0.1:%d/ (log in with the token in %s/run/console.token)\n",
               atoi(port), s->root);
    free(port);
}

/* Stops what one `ursa up` started, daemons first, after it failed. */
static void roll_back(const stack *s, const cfg *c, const plan *ps, int n, int redis,
                      int broker) {
    const char *names[8], *exes[8];
    for (int i = 0; i < n; i++) names[i] = ps[i].name, exes[i] = ps[i].exe;
    stop_all(s, names, exes, n, SIGTERM, s->timeout_ms);
    char bexe[PATH_MAX + 32];
    snprintf(bexe, sizeof bexe, "%s/ursa-broker", s->bindir);
    if (broker) stop_all(s, (const char *[]){"broker"}, (const char *[]){bexe}, 1, SIGTERM,
                         s->timeout_ms);
    if (redis) stop_all(s, (const char *[]){"redis"}, (const char *[]){cfg_str(c, "redis.server")},
                        1, SIGTERM, s->timeout_ms);
}

int stack_up(const cfg *c, int argc, char **argv) {
    (void)argc; /* no positional arguments */
    (void)argv;
    stack s;
    if (stack_init(c, &s)) return 1;
    /* an object store that refuses (wrong key, no bucket, unreachable) is
     * named here, before anything starts, not by daemons dying in a loop */
    char berr[600];
    blob_store *blobs = statedir_blob_store(c, berr, sizeof berr);
    if (!blobs) {
        fprintf(stderr, "ursa up: %s\n", berr);
        return 1;
    }
    blob_store_destroy(blobs);
    int lock = lock_state(&s);
    int changed = 0, rc = 0, redis_new = 0, broker_new = 0;
    int port = read_port(&s);
    char bs[512];
    const char *ext = cfg_str(c, "redis.url");

    if (*ext) { /* a Redis (or Redis Cluster) of the user's: not ours to start */
        char shown[600];
        printf("using redis      %s (redis.url; not started by ursa)\n",
               util_url_redact(ext, shown, sizeof shown));
    } else if (!(alive_pid(&s, "redis", cfg_str(c, "redis.server")) && port &&
                 redis_ping(&s, port, NULL))) {
        if (start_redis(&s, c)) {
            rc = 1;
            goto out;
        }
        changed = redis_new = 1;
    }
    char bexe[PATH_MAX + 32];
    snprintf(bexe, sizeof bexe, "%s/ursa-broker", s.bindir);
    if (!(alive_pid(&s, "broker", bexe) && read_bootstrap(&s, bs, sizeof bs) &&
          stack_broker_topics(bs, 2000) > 0)) {
        pid_t old = alive_pid(&s, "broker", bexe);
        if (old) kill(old, SIGKILL); /* alive but not answering */
        if (start_broker(&s)) {
            roll_back(&s, c, NULL, 0, redis_new, 0);
            rc = 1;
            goto out;
        }
        changed = broker_new = 1;
    }
    /* After a new broker, every daemon still talks to the old one's
     * address, whose topics and offsets died with it: nothing they hold can
     * be committed there, so they are SIGKILLed (which each survives by
     * design) all at once, not stopped one by one. */
    const char *names[8];
    char exes[8][PATH_MAX + 32];
    const char *exep[8];
    plan todo[8];
    int n = 0, ntodo = 0;
    memset(todo, 0, sizeof todo);
    for (int i = 0; stack_daemons[i]; i++) {
        snprintf(exes[n], sizeof exes[n], "%s/ursa-%s", s.bindir, stack_daemons[i]);
        if (access(exes[n], X_OK) != 0) continue;
        names[n] = stack_daemons[i];
        exep[n] = exes[n];
        pid_t pid = alive_pid(&s, stack_daemons[i], exes[n]);
        if (!pid || broker_new) todo[ntodo++].name = stack_daemons[i];
        n++;
    }
    if (broker_new) stop_all(&s, names, exep, n, SIGKILL, s.timeout_ms);
    if (ntodo) {
        char why[1024];
        int started = 0;
        if (start_daemons(&s, c, todo, ntodo, &started, why, sizeof why)) {
            fprintf(stderr, "ursa: %s\n", why);
            roll_back(&s, c, todo, started, redis_new, broker_new);
            fprintf(stderr, "ursa: up failed; stopped what it had started\n");
            rc = 1;
            goto out;
        }
        changed = 1;
    }
    if (!changed) printf("the stack in %s is already running; nothing changed\n", s.root);
    print_console(&s);
out:
    if (lock >= 0) close(lock);
    return rc;
}

/* Says which jobs are not over, while Redis still answers: their messages
 * go with the broker, and the trainers' sweep sends them again once the
 * stack is up (jobs.h, job_sweep). */
static void tell_jobs(const cfg *c) {
    char url[600], err[512];
    rstore *r = NULL;
    redisReply *ids = NULL;
    if (statedir_redis_url(c, url, sizeof url, err, sizeof err) != URSA_OK ||
        !(r = rstore_new(url, 1000, err, sizeof err)))
        return;
    rstore_set_retry_ms(r, 500);
    if (job_list_active(r, &ids) == URSA_OK && ids->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < ids->elements; i++) {
            job_state st;
            if (job_get_state(r, ids->element[i]->str, &st) != URSA_OK || job_state_final(st))
                continue;
            printf("job %s is %s; it %s when the stack is up again\n", ids->element[i]->str,
                   job_state_name(st), st == JOB_RUNNING ? "resumes" : "starts");
        }
    }
    if (ids) freeReplyObject(ids);
    rstore_destroy(r);
}

int stack_down(const cfg *c, int argc, char **argv) {
    (void)argc; /* no positional arguments */
    (void)argv;
    stack s;
    if (stack_init(c, &s)) return 1;
    int lock = lock_state(&s);
    /* the daemons together (each ends within 15 s of SIGTERM), then the
     * broker and Redis they were flushing to */
    const char *names[8], *exep[8];
    char exes[8][PATH_MAX + 32];
    int n = 0;
    for (int i = 0; stack_daemons[i]; i++, n++) {
        snprintf(exes[n], sizeof exes[n], "%s/ursa-%s", s.bindir, stack_daemons[i]);
        names[n] = stack_daemons[i];
        exep[n] = exes[n];
    }
    stop_all(&s, names, exep, n, SIGTERM, s.timeout_ms);
    tell_jobs(c);
    for (int i = 0; i < n; i++) { /* up wrote them; `ursa env` must not show dead ports */
        char pf[PATH_MAX + 64];
        path_of(&s, pf, sizeof pf, "run/%s.metrics-port", names[i]);
        unlink(pf);
    }
    char bexe[PATH_MAX + 32];
    snprintf(bexe, sizeof bexe, "%s/ursa-broker", s.bindir);
    const char *last[] = {"broker", "redis"}, *lastexe[] = {bexe, cfg_str(c, "redis.server")};
    stop_all(&s, last, lastexe, 2, SIGTERM, s.timeout_ms);
    printf("the stack in %s is down\n", s.root);
    if (lock >= 0) close(lock);
    return 0;
}

int stack_env(const cfg *c, int argc, char **argv) {
    (void)argc; /* no positional arguments */
    (void)argv;
    char bs[512], url[600], err[512];
    if (statedir_kafka_bootstrap(c, bs, sizeof bs, err, sizeof err) ||
        statedir_redis_url(c, url, sizeof url, err, sizeof err)) {
        fprintf(stderr, "ursa: %s\n", err);
        return 1;
    }
    printf("URSA_KAFKA_BOOTSTRAP=%s\nURSA_REDIS_URL=%s\n", bs, url);
    /* the daemons' HTTP ports, from the files they (or up) wrote; not named
     * like settings (URSA_CRAWLER_METRICS_PORT would be read as one by a
     * daemon started from that shell) */
    static const struct {
        const char *file, *var, *path;
    } urls[] = {{"run/inference.port", "URSA_INFERENCE_URL", "/"},
                {"run/console.port", "URSA_CONSOLE_URL", "/"},
                {"run/crawler.metrics-port", "URSA_CRAWLER_METRICS_URL", "/metrics"},
                {"run/verifier.metrics-port", "URSA_VERIFIER_METRICS_URL", "/metrics"},
                {"run/trainer.metrics-port", "URSA_TRAINER_METRICS_URL", "/metrics"},
                {NULL, NULL, NULL}};
    for (int i = 0; urls[i].file; i++) {
        char pf[4200], *port = NULL;
        if (statedir_path(c, urls[i].file, pf, sizeof pf) == URSA_OK &&
            util_read_file(pf, 64, &port, NULL) == URSA_OK && atoi(port) > 0)
            printf("%s=http://127.0.0.1:%d%s\n", urls[i].var, atoi(port), urls[i].path);
        free(port);
    }
    return 0;
}

int stack_exists(const cfg *c) {
    static const char *const marks[] = {"redis.port", "broker.bootstrap", "run", NULL};
    char p[4200];
    for (int i = 0; marks[i]; i++)
        if (statedir_path(c, marks[i], p, sizeof p) == URSA_OK && access(p, F_OK) == 0) return 1;
    return 0;
}

int stack_inspect(const cfg *c, stack_view *v) {
    stack s;
    memset(v, 0, sizeof *v);
    if (stack_locate(c, &s, 0)) return -1;
    snprintf(v->root, sizeof v->root, "%s", s.root);
    stack_proc *p = &v->procs[v->n++];
    p->name = "redis";
    p->state = "external";
    if (!*s.redis_url) {
        int port = read_port(&s);
        double ms = 0;
        p->pid = alive_pid(&s, "redis", cfg_str(c, "redis.server"));
        p->state = p->pid ? "running" : "down";
        p->ok = p->pid && port && redis_ping(&s, port, &ms);
        if (p->ok)
            snprintf(p->health, sizeof p->health, "ok: PING %.0f ms, redis://127.0.0.1:%d, AOF on",
                     ms, port);
        else snprintf(p->health, sizeof p->health, "%s", p->pid ? "not answering PING" : "-");
    }
    char exe[PATH_MAX + 32], bs[512];
    snprintf(exe, sizeof exe, "%s/ursa-broker", s.bindir);
    p = &v->procs[v->n++];
    p->name = "broker";
    p->pid = alive_pid(&s, "broker", exe);
    p->state = p->pid ? "running" : "down";
    int nt = p->pid && read_bootstrap(&s, bs, sizeof bs) ? stack_broker_topics(bs, 2000) : -1;
    p->ok = nt > 0;
    if (p->ok)
        snprintf(p->health, sizeof p->health, "ok: %s, %d topics, in memory only", bs, nt);
    else
        snprintf(p->health, sizeof p->health, "%s",
                 p->pid ? "not answering metadata requests" : "-");
    for (int i = 0; stack_daemons[i]; i++) {
        p = &v->procs[v->n++];
        p->name = stack_daemons[i];
        snprintf(exe, sizeof exe, "%s/ursa-%s", s.bindir, stack_daemons[i]);
        if (access(exe, X_OK) != 0) {
            p->state = "not built";
            continue;
        }
        p->pid = alive_pid(&s, stack_daemons[i], exe);
        p->state = p->pid ? "running" : "down";
    }
    return 0;
}

int stack_broker(const cfg *c, int argc, char **argv) {
    if (argc < 1) {
        fprintf(stderr, "ursa broker: give a command (see ursa broker --help)\n");
        return 2;
    }
    stack s;
    if (stack_init(c, &s)) return 1;
    char line[512];
    size_t o = 0;
    for (int i = 0; i < argc && o < sizeof line; i++)
        o += (size_t)snprintf(line + o, sizeof line - o, "%s%s", i ? " " : "", argv[i]);
    if (o >= sizeof line - 1) {
        fprintf(stderr, "ursa broker: command too long\n");
        return 2;
    }
    line[o++] = '\n';
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s/run/broker.sock", s.root);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        fprintf(stderr, "ursa broker: cannot reach the embedded broker at %s: %s (is the stack "
                        "up?)\n", a.sun_path, strerror(errno));
        if (fd >= 0) close(fd);
        return 1;
    }
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char out[1024];
    size_t n = 0;
    if (util_send_all(fd, line, o) == 0)
        for (ssize_t r; n < sizeof out - 1 && (r = recv(fd, out + n, sizeof out - 1 - n, 0)) > 0;)
            n += (size_t)r;
    close(fd);
    out[n] = '\0';
    if (!n) {
        fprintf(stderr, "ursa broker: no answer from the broker\n");
        return 1;
    }
    fputs(out, strncmp(out, "ok", 2) ? stderr : stdout);
    return strncmp(out, "ok", 2) ? 1 : 0;
}
