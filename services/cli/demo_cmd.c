/* demo_cmd.c: `ursa demo`, fast.ai's lesson 2 played end to end on this
 * machine, with the web's mess in the data.
 *
 * Fashion-MNIST (Debian's dataset-fashion-mnist) is written out as JPEG
 * files and served by a local HTTP server (fault-server, beside this
 * binary), because real photos are not reachable offline. The URL list
 * mixes in what a crawl of the web meets: 404s, a slow host, HTML sent as
 * image/jpeg, truncated files, exact and near-duplicates, and a share of
 * the images under a wrong label. Then every step of the lesson runs on
 * the embedded stack as a user would run it, each as `ursa COMMAND` (this
 * binary, in a child process, its output shown): ingest, lr-find, train in
 * two stages, interp, audit, clean, retrain, export, and the model served
 * over HTTP. What was planted is known, so the summary says how much of it
 * the audit found; accuracy is measured on the 10,000 official test images.
 *
 * Everything it writes goes to --out (demo-out): the images it serves, the
 * URL list, the plots, the model files and summary.md. A second run reuses
 * the images (and says so) and ingests into a new dataset, since the first
 * one's edits stay (they are kept by design). */
#include "demo_cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "dataset.h"
#include "image.h"
#include "statedir.h"
#include "util.h"

const cfg_def demo_defs[] = {
    {"out", CFG_STR, "demo-out", 1, 0, "where the demo writes its files"},
    {"n", CFG_INT, "0", 0, 60000,
     "training images taken from Fashion-MNIST's 60,000 (0: 20,000, or all with --full)"},
    {"full", CFG_BOOL, "false", 1, 0,
     "all 60,000 training images and a longer recipe (14 minutes on 2 AVX-512 cores)"},
    {"quick", CFG_BOOL, "false", 1, 0,
     "1,500 images and short stages: checks that every step runs (CI), not the accuracy"},
    {"noise", CFG_DOUBLE, "0.05", 0, 0.5, "share of the images put under a wrong label"},
    {"seed", CFG_INT, "1", 0, 1e9, "seeds what is planted"},
    {"data", CFG_STR, "/usr/share/datasets/fashion-mnist", 1, 0,
     "Fashion-MNIST's idx files (Debian package dataset-fashion-mnist)"},
    {NULL, 0, NULL, 0, 0, NULL}};

#define NCLASS 10
/* as idx2jpeg names Fashion-MNIST's classes (ops/tools/idx.h) */
static const char *const classes[NCLASS] = {"tshirt", "trouser", "pullover", "dress", "coat",
                                            "sandal", "shirt",   "sneaker",  "bag",   "boot"};

static char self[4096], bindir[4096];
static pid_t server = -1;

static double now_s(void) { return (double)util_mono_ms() / 1000.0; }

/* ---- child processes ------------------------------------------------------------- */

/* Runs prog (ursa itself when prog is NULL, else a tool beside it) with the
 * NULL-terminated args. Its stdout is shown when echo, and kept in *out
 * (malloc'd) when out is not NULL; its stderr is ours. Returns its exit
 * status, or -1 when it could not run. */
static int runv(int echo, char **out, const char *prog, const char *const *args) {
    char path[4200];
    if (prog && prog[0] == '/') snprintf(path, sizeof path, "%s", prog);
    else if (prog) snprintf(path, sizeof path, "%s/%s", bindir, prog);
    else snprintf(path, sizeof path, "%s", self);
    size_t n = 0;
    while (args[n]) n++;
    char **argv = calloc(n + 2, sizeof *argv);
    if (!argv) return -1;
    argv[0] = prog ? (char *)(strrchr(prog, '/') ? strrchr(prog, '/') + 1 : prog) : "ursa";
    for (size_t i = 0; i < n; i++) argv[i + 1] = (char *)args[i];
    int fd[2];
    if (pipe(fd)) {
        free(argv);
        return -1;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 1);
        close(fd[1]);
        execv(path, argv);
        fprintf(stderr, "ursa demo: cannot run %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    free(argv);
    close(fd[1]);
    if (pid < 0) {
        close(fd[0]);
        return -1;
    }
    char buf[8192];
    size_t len = 0, cap = 0;
    char *acc = NULL;
    for (;;) {
        ssize_t r = read(fd[0], buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        if (echo) {
            fwrite(buf, 1, (size_t)r, stdout);
            fflush(stdout);
        }
        if (out) {
            if (len + (size_t)r + 1 > cap) {
                cap = (len + (size_t)r + 1) * 2;
                char *t = realloc(acc, cap);
                if (!t) break;
                acc = t;
            }
            memcpy(acc + len, buf, (size_t)r);
            len += (size_t)r;
            acc[len] = '\0';
        }
    }
    close(fd[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (out) *out = acc ? acc : strdup("");
    else free(acc);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* `ursa ARGS...` with its output shown but not its command line (cl_run
 * shows both); 0 or its status. */
#define URSA(...) runv(1, NULL, NULL, (const char *const[]){__VA_ARGS__, NULL})
#define URSA_OUT(out, ...) runv(1, out, NULL, (const char *const[]){__VA_ARGS__, NULL})

/* A command line being built: shown as the user would type it, then run. */
typedef struct {
    const char *a[64];
    int n;
} cmdline;

static void cl_add(cmdline *l, const char *const *v, int n) {
    for (int i = 0; i < n && l->n < 63; i++) l->a[l->n++] = v[i];
    l->a[l->n] = NULL;
}
#define CL(l, ...)                                                                    \
    cl_add(l, (const char *const[]){__VA_ARGS__},                                     \
           (int)(sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)))

/* Shows "$ ursa ARGS" and runs it (its output shown, kept in *out). */
static int cl_run(const cmdline *l, char **out) {
    printf("$ ursa");
    for (int i = 0; i < l->n; i++) printf(" %s", l->a[i]);
    printf("\n");
    return runv(1, out, NULL, l->a);
}

static void stop_server(void) {
    if (server > 0) {
        kill(server, SIGTERM);
        waitpid(server, NULL, 0);
        server = -1;
    }
}

static void on_signal(int sig) {
    if (server > 0) kill(server, SIGTERM);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* ---- small helpers ----------------------------------------------------------------- */

static uint64_t rng_state;
static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int read_int_file(const char *path) {
    char *d = NULL;
    size_t n = 0;
    if (util_read_file(path, 64, &d, &n) != URSA_OK) return -1;
    int v = atoi(d);
    free(d);
    return v;
}

/* The value after "key " on a line of text starting with prefix, into out. */
static int line_field(const char *text, const char *prefix, char *out, size_t n) {
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, prefix, strlen(prefix)) != 0) continue;
        p += strlen(prefix);
        size_t k = 0;
        while (p[k] && p[k] != '\n' && p[k] != ':' && p[k] != ' ' && k + 1 < n) k++;
        memcpy(out, p, k);
        out[k] = '\0';
        return 0;
    }
    return -1;
}

/* ---- the data ---------------------------------------------------------------------- */

typedef struct {
    char url[256];
    int label, truth; /* truth -1: not a Fashion-MNIST image (a mess case) */
    char kind;        /* 'i' an image, 'c' an exact copy, 'n' a near-duplicate, 'm' mess */
    char near_orig;   /* an image a near-duplicate was made of */
} row;

typedef struct {
    row *r;
    size_t n, cap;
} rows;

static int add_row(rows *v, const char *url, int label, int truth, char kind) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 1024;
        row *t = realloc(v->r, cap * sizeof *t);
        if (!t) return -1;
        v->r = t, v->cap = cap;
    }
    row *w = &v->r[v->n++];
    snprintf(w->url, sizeof w->url, "%s", url);
    w->label = label;
    w->truth = truth;
    w->kind = kind;
    w->near_orig = 0;
    return 0;
}

static const rows *by_url_rows; /* qsort and bsearch have no context argument */
static int by_url(const void *a, const void *b) {
    return strcmp(by_url_rows->r[*(const int *)a].url, by_url_rows->r[*(const int *)b].url);
}
static int url_cmp(const void *key, const void *b) {
    return strcmp(key, by_url_rows->r[*(const int *)b].url);
}

/* Writes DIR/<class>/<i>.jpg for images [0, n) of a Fashion-MNIST set by
 * idx2jpeg, unless a marker says they are there already. */
static int images(const char *data, const char *set, const char *dir, int n, int *reused) {
    char marker[4200], img[4200], lab[4200], lim[24];
    snprintf(marker, sizeof marker, "%s/.images", dir);
    *reused = read_int_file(marker) == n;
    if (*reused) return 0;
    snprintf(img, sizeof img, "%s/%s-images-idx3-ubyte.gz", data, set);
    snprintf(lab, sizeof lab, "%s/%s-labels-idx1-ubyte.gz", data, set);
    snprintf(lim, sizeof lim, "%d", n);
    char *out = NULL;
    int rc = runv(0, &out, "idx2jpeg", (const char *const[]){img, lab, dir, "@", "--limit", lim, NULL});
    free(out);
    if (rc) return -1;
    char v[24];
    int k = snprintf(v, sizeof v, "%d\n", n);
    return util_write_file_atomic(marker, v, (size_t)k) == URSA_OK ? 0 : -1;
}

/* The labels idx2jpeg wrote, as its urls_<class>.txt lists name them
 * ("@/<class>/<i>.jpg"): truth[i] for i < n. */
static int truths(const char *dir, int n, int *truth) {
    for (int i = 0; i < n; i++) truth[i] = -1;
    for (int c = 0; c < NCLASS; c++) {
        char p[4200];
        snprintf(p, sizeof p, "%s/urls_%s.txt", dir, classes[c]);
        FILE *f = fopen(p, "r");
        if (!f) return -1;
        char line[512];
        while (fgets(line, sizeof line, f)) {
            const char *s = strrchr(line, '/');
            int i = s ? atoi(s + 1) : -1;
            if (i >= 0 && i < n) truth[i] = c;
        }
        fclose(f);
    }
    for (int i = 0; i < n; i++)
        if (truth[i] < 0) return -1;
    return 0;
}

/* A copy of image src re-encoded at a lower quality (a near-duplicate). */
static int reencode(const char *src, const char *dst) {
    char *d = NULL;
    size_t n = 0;
    if (util_read_file(src, 1 << 20, &d, &n) != URSA_OK) return -1;
    img_rgb im;
    img_reject rej;
    ursa_err e = img_decode((const uint8_t *)d, n, NULL, &im, &rej);
    free(d);
    if (e) return -1;
    uint8_t *j = NULL;
    size_t jl = 0;
    e = img_encode_jpeg(&im, 60, &j, &jl);
    img_free(&im);
    if (e) return -1;
    e = util_write_file_atomic(dst, j, jl);
    free(j);
    return e ? -1 : 0;
}

static int copy_file(const char *src, const char *dst) {
    char *d = NULL;
    size_t n = 0;
    if (util_read_file(src, 1 << 20, &d, &n) != URSA_OK) return -1;
    ursa_err e = util_write_file_atomic(dst, d, n);
    free(d);
    return e ? -1 : 0;
}

/* ---- the demo ----------------------------------------------------------------------- */

typedef struct {
    const char *name;
    double s;
} stage_time;

static stage_time times[16];
static int ntimes;
static double t_stage;

static void stage(const char *title) {
    double t = now_s();
    if (ntimes > 0) times[ntimes - 1].s = t - t_stage;
    t_stage = t;
    if (title) {
        times[ntimes++].name = title;
        if (isatty(1)) printf("\n\033[1m== %s\033[0m\n", title);
        else printf("\n== %s\n", title);
    }
    fflush(stdout);
}

/* Test accuracy of a model file on the official test images. */
static double test_accuracy(const char *model, const char *testdir, int ntest, const int *truth) {
    const char **args = calloc((size_t)ntest + 5, sizeof *args);
    char **names = calloc((size_t)ntest, sizeof *names);
    if (!args || !names) {
        free(args);
        free(names);
        return -1;
    }
    int k = 0;
    args[k++] = "predict";
    args[k++] = "--model";
    args[k++] = model;
    for (int i = 0; i < ntest; i++) {
        char p[4200];
        snprintf(p, sizeof p, "%s/%s/%d.jpg", testdir, classes[truth[i]], i);
        names[i] = strdup(p);
        args[k++] = names[i];
    }
    args[k] = NULL;
    char *out = NULL;
    int rc = runv(0, &out, NULL, args);
    long right = 0, seen = 0;
    for (char *line = out, *nl; rc == 0 && line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        char *t1 = strchr(line, '\t');
        if (!t1) continue;
        *t1 = '\0';
        char *t2 = strchr(t1 + 1, '\t');
        if (t2) *t2 = '\0';
        const char *f = strrchr(line, '/');
        const char *d = f;
        while (d && d > line && d[-1] != '/') d--;
        if (!f || !d) continue;
        seen++;
        right += (size_t)(f - d) == strlen(t1 + 1) && !strncmp(d, t1 + 1, (size_t)(f - d));
    }
    free(out);
    for (int i = 0; i < ntest; i++) free(names[i]);
    free(names);
    free(args);
    return rc == 0 && seen == ntest ? (double)right / (double)ntest : -1;
}

int demo_cmd(const cfg *c, int argc, char **argv) {
    (void)argv;
    if (argc) {
        fprintf(stderr, "ursa demo: takes no arguments (see ursa demo --help)\n");
        return 2;
    }
    double t0 = now_s();
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) {
        fprintf(stderr, "ursa demo: cannot find this program's path\n");
        return 1;
    }
    self[sl] = '\0';
    snprintf(bindir, sizeof bindir, "%s", self);
    *strrchr(bindir, '/') = '\0';
    const char *data = cfg_str(c, "data"), *out = cfg_str(c, "out");
    int full = cfg_bool(c, "full"), quick = cfg_bool(c, "quick");
    int n = (int)cfg_int(c, "n");
    if (!n) n = full ? 60000 : quick ? 1500 : 20000;
    int ntest = quick ? 1000 : 10000;
    double noise = cfg_double(c, "noise");
    rng_state = (uint64_t)cfg_int(c, "seed") * 7919u + 1;
    char p[4200], q[4200];
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", data);
    if (access(p, R_OK)) {
        fprintf(stderr,
                "ursa demo: no Fashion-MNIST at %s: apt-get install dataset-fashion-mnist "
                "(or give --data DIR)\n", data);
        return 2;
    }
    snprintf(p, sizeof p, "%s/fault-server", bindir);
    snprintf(q, sizeof q, "%s/idx2jpeg", bindir);
    if (access(p, X_OK) || access(q, X_OK)) {
        fprintf(stderr, "ursa demo: fault-server and idx2jpeg are not beside %s: run it from a "
                        "built tree (cmake --build build)\n", self);
        return 2;
    }
    char www[4200], test[4200];
    snprintf(www, sizeof www, "%s/www", out);
    snprintf(test, sizeof test, "%s/test", out);
    if (util_mkdirs(www) || util_mkdirs(test)) {
        fprintf(stderr, "ursa demo: cannot make %s\n", www);
        return 1;
    }
    /* the daemons `ursa up` starts must fetch from the local server and take
     * 28 px images; the server takes a free port rather than fail on a busy
     * 8080 (a stack already running keeps the settings it started with) */
    setenv("URSA_FETCH_ALLOW", "127.0.0.1/32", 0);
    setenv("URSA_IMG_MIN_SIDE", "16", 0);
    setenv("URSA_INFERENCE_PORT", "0", 0);
    /* the slow host given up on sooner: 1 s under 1 KB/s, three attempts
     * 250 and 500 ms apart (a crawl of the web waits 5 s and 1 and 2 s) */
    setenv("URSA_FETCH_LOW_SPEED_SECS", "1", 0);
    setenv("URSA_CRAWLER_RETRY_MS", "250", 0);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int rc = 1, *truth = malloc(sizeof(int) * 60000), *ttruth = malloc(sizeof(int) * 10000);
    rows v = {0};
    char *txt = NULL, *status = NULL;
    if (!truth || !ttruth) goto out;

    /* ---- the stack, first: its daemons join their consumer groups (3 s)
     * while the images are written ---- */
    stage("ursa up: the embedded stack (redis-server, Kafka broker, the daemons)");
    if (URSA("up")) goto out;
    /* a new dataset every run, whatever --out says: the stack keeps the
     * earlier runs' datasets (the same images under them, and their edits) */
    char ds[64];
    int runno = 0, exists = 1;
    rstore *rs = cli_redis(c);
    if (!rs) goto out;
    while (exists && ++runno < 1000) {
        snprintf(ds, sizeof ds, runno == 1 ? "fashion" : "fashion-%d", runno);
        if (ds_exists(rs, ds, &exists) != URSA_OK) {
            fprintf(stderr, "ursa demo: cannot read the datasets from Redis\n");
            rstore_destroy(rs);
            goto out;
        }
    }
    rstore_destroy(rs);
    if (runno > 1)
        printf("run %d on this stack: the dataset is %s (the earlier runs' datasets stay)\n", runno,
               ds);

    /* ---- the data, and a web server for it ---- */
    stage("the data: Fashion-MNIST as JPEG files on a local web server, with the web's mess");
    int reused_tr = 0, reused_te = 0;
    if (images(data, "train", www, n, &reused_tr) || truths(www, n, truth) ||
        images(data, "t10k", test, ntest, &reused_te) || truths(test, ntest, ttruth)) {
        fprintf(stderr, "ursa demo: cannot write the images into %s\n", out);
        goto out;
    }
    if (reused_tr) printf("reusing the %d training images written by an earlier run in %s\n", n, www);
    else printf("wrote %d training images into %s\n", n, www);
    if (reused_te) printf("reusing the %d test images in %s\n", ntest, test);
    else printf("wrote %d test images (the official test set) into %s\n", ntest, test);
    char portf[4300];
    snprintf(portf, sizeof portf, "%s/www.port", out);
    unlink(portf);
    snprintf(p, sizeof p, "%s/www.log", out);
    fflush(stdout);
    if ((server = fork()) == 0) {
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 1), dup2(fd, 2), close(fd);
        snprintf(q, sizeof q, "%s/fault-server", bindir);
        execl(q, "fault-server", www, portf, (char *)NULL);
        _exit(127);
    }
    int port = -1;
    for (int i = 0; i < 100 && (port = read_int_file(portf)) <= 0; i++) usleep(50000);
    if (port <= 0) {
        fprintf(stderr, "ursa demo: the image server did not start (see %s)\n", p);
        goto out;
    }
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    /* the URL list: every image under its class, a share under a wrong one */
    long flipped = 0, ndup = quick ? 5 : 20, nnear = quick ? 3 : 10, nmess = quick ? 2 : 8;
    snprintf(p, sizeof p, "%s/planted.tsv", out);
    FILE *pl = fopen(p, "w");
    if (!pl) goto out;
    fprintf(pl, "kind\turl\tgiven\ttrue\n");
    for (int i = 0; i < n; i++) {
        int lab = truth[i];
        if ((double)(rnd() >> 11) / 9007199254740992.0 < noise) {
            lab = (truth[i] + 1 + (int)(rnd() % (NCLASS - 1))) % NCLASS;
            flipped++;
        }
        char u[256];
        snprintf(u, sizeof u, "%s/ds/%s/%d.jpg", base, classes[truth[i]], i);
        if (lab != truth[i]) fprintf(pl, "label\t%s\t%s\t%s\n", u, classes[lab], classes[truth[i]]);
        if (add_row(&v, u, lab, truth[i], 'i')) goto out;
    }
    /* exact duplicates (the same bytes at a second URL) and near-duplicates
     * (re-encoded at quality 60), under the original's label */
    for (long k = 0; k < ndup + nnear; k++) {
        int i = (int)(rnd() % (uint64_t)n);
        char src[4300], dst[4300], u[256];
        snprintf(src, sizeof src, "%s/%s/%d.jpg", www, classes[truth[i]], i);
        if (k < ndup) {
            snprintf(dst, sizeof dst, "%s/copy%ld.jpg", www, k);
            if (copy_file(src, dst)) goto out;
            snprintf(u, sizeof u, "%s/img/copy%ld.jpg", base, k);
        } else {
            snprintf(dst, sizeof dst, "%s/near/%ld.jpg", www, k);
            snprintf(q, sizeof q, "%s/near", www);
            if (util_mkdirs(q) || reencode(src, dst)) goto out;
            snprintf(u, sizeof u, "%s/ds/near/%ld.jpg", base, k);
        }
        fprintf(pl, "%s\t%s\t%s\t%s/ds/%s/%d.jpg\n", k < ndup ? "copy" : "near", u,
                classes[v.r[i].label], base, classes[truth[i]], i);
        if (k >= ndup) v.r[i].near_orig = 1;
        if (add_row(&v, u, v.r[i].label, truth[i], k < ndup ? 'c' : 'n')) goto out;
    }
    /* what is not an image at all: 404s, HTML sent as image/jpeg, truncated
     * files, and a host that sends one byte a second */
    for (long k = 0; k < nmess; k++) {
        char u[256], src[4300], dst[4300];
        int i = (int)(rnd() % (uint64_t)n);
        snprintf(src, sizeof src, "%s/%s/%d.jpg", www, classes[truth[i]], i);
        snprintf(dst, sizeof dst, "%s/cut%ld.jpg", www, k);
        if (copy_file(src, dst)) goto out;
        const char *kind[] = {"404", "html", "truncated"};
        for (int j = 0; j < 3; j++) {
            if (j == 0) snprintf(u, sizeof u, "%s/404?%ld", base, k);
            else snprintf(u, sizeof u, "%s/%s/cut%ld.jpg", base, kind[j], k);
            fprintf(pl, "%s\t%s\t%s\t-\n", kind[j], u, classes[truth[i]]);
            if (add_row(&v, u, truth[i], -1, 'm')) goto out;
        }
    }
    for (int k = 0; k < 2; k++) {
        char u[256];
        snprintf(u, sizeof u, "%s/slow?%d", base, k);
        fprintf(pl, "slow\t%s\t%s\t-\n", u, classes[k]);
        if (add_row(&v, u, k, -1, 'm')) goto out;
    }
    fclose(pl);
    snprintf(p, sizeof p, "%s/urls.csv", out);
    FILE *f = fopen(p, "w");
    if (!f) goto out;
    fprintf(f, "url,label\n");
    /* the mess first: the slow host's attempts and their waits then overlap
     * the bulk instead of trailing it (5 s at the end of the ingest) */
    for (int mess = 1; mess >= 0; mess--)
        for (size_t i = 0; i < v.n; i++)
            if ((v.r[i].kind == 'm') == mess)
                fprintf(f, "%s,%s\n", v.r[i].url, classes[v.r[i].label]);
    if (fclose(f)) goto out;
    printf("the URL list %s: %zu URLs in %d classes, served from %s\n", p, v.n, NCLASS, base);
    printf("planted (listed in %s/planted.tsv): %ld images under a wrong label (%.0f%%), %ld exact "
           "copies, %ld re-encoded near-duplicates, %ld 404s, %ld HTML pages sent as image/jpeg, "
           "%ld truncated files, 2 URLs on a host that sends a byte a second\n",
           out, flipped, 100.0 * noise, ndup, nnear, nmess, nmess, nmess);

    stage("ursa ingest: download and verify every URL");
    snprintf(p, sizeof p, "%s/urls.csv", out);
    cmdline l = {.n = 0};
    CL(&l, "ingest", "--dataset", ds, p);
    if (cl_run(&l, NULL)) goto out;
    if (URSA_OUT(&status, "status", "--dataset", ds)) goto out;

    /* ---- lr_find ---- */
    stage("ursa lr-find: the learning-rate finder");
    char plot[4300];
    snprintf(plot, sizeof plot, "%s/lr_find.svg", out);
    /* the recipe that did best here in little time (ops/tools/train_fmnist.c):
     * no augmentation at 28 px, batch 128, weight decay 0.05, label smoothing
     * 0.1 (which also blunts the wrong labels) */
    const char *const recipe[] = {"--arch", "small", "--size", "28", "--bs", quick ? "32" : "128",
                                  "--wd", "0.05", "--label-smoothing", "0.1", "--no-augment",
                                  "--valid-pct", quick ? "0.2" : "0.1"};
    enum { NRECIPE = sizeof recipe / sizeof *recipe };
    l.n = 0;
    CL(&l, "lr-find", "--dataset", ds);
    cl_add(&l, recipe, NRECIPE);
    CL(&l, "--plot", plot);
    if (cl_run(&l, &txt)) goto out;
    char sug[32] = "";
    line_field(txt, "suggested lr: ", sug, sizeof sug);
    free(txt);
    txt = NULL;
    printf("lr_find suggests %s, where the loss falls fastest; as the lesson does, the first "
           "stage takes a max_lr well before the loss's minimum on the plot: 1e-2\n\n", sug);

    /* ---- train ---- */
    const char *e1 = full ? "14" : quick ? "3" : "8", *e2 = full ? "3" : quick ? "1" : "2";
    char st1[64], st2[96];
    snprintf(st1, sizeof st1, "%s:1e-2", e1);
    snprintf(st2, sizeof st2, "%s:1e-3:5e-3", e2);
    stage("ursa train: the small resnet from scratch, one-cycle, two stages");
    l.n = 0;
    CL(&l, "train", "--dataset", ds);
    cl_add(&l, recipe, NRECIPE);
    CL(&l, "--stage", st1, "--stage", st2);
    if (cl_run(&l, &txt)) goto out;
    char m1[128] = "";
    line_field(txt, "model ", m1, sizeof m1);
    free(txt);
    txt = NULL;
    if (!m1[0]) goto out;
    char before[4300], after[4300], cm[4300];
    snprintf(before, sizeof before, "%s/model-before-cleaning.onnx", out);
    snprintf(after, sizeof after, "%s/model.onnx", out);
    snprintf(cm, sizeof cm, "%s/confusion.svg", out);
    if (URSA("export", m1, before)) goto out;

    stage("ursa interp: what the model gets wrong");
    l.n = 0;
    CL(&l, "interp", m1, "--most-confused", "12", "--top-losses", "8", "--plot", cm);
    if (cl_run(&l, NULL)) goto out;

    /* ---- the audit: two folds, each a model trained from scratch ---- */
    stage("ursa audit: which images look mislabeled or duplicated");
    l.n = 0;
    /* two folds of a short training: models that cannot have learnt the
     * wrong labels by heart (the first model's body has: after ten epochs
     * its features carry them, and an audit on it finds under half); two
     * epochs by default, the five minutes' share, three with --full */
    CL(&l, "audit", "--dataset", ds, "--recipe", "flags");
    cl_add(&l, recipe, NRECIPE);
    CL(&l, "--folds", "2", "--stage", full ? "3:1e-2" : "2:1e-2");
    if (cl_run(&l, &txt)) goto out;
    const char *oe = strstr(txt, "out-of-fold error_rate ");
    double oof = oe ? atof(oe + strlen("out-of-fold error_rate ")) : 1;
    free(txt);
    txt = NULL;
    char *sus = NULL;
    if (runv(0, &sus, NULL, (const char *const[]){"clean", "--dataset", ds, "--kinds",
                                                   "label,duplicate", NULL})) {
        free(sus);
        goto out;
    }
    snprintf(p, sizeof p, "%s/suspects.tsv", out);
    util_write_file_atomic(p, sus, strlen(sus));
    /* against what was planted: each suspect's URL looked up in the list */
    long lab_found = 0, lab_true = 0, dup_found = 0, dup_true = 0, lab_right = 0;
    int *order = malloc(sizeof(int) * (v.n + 1));
    if (!order) {
        free(sus);
        goto out;
    }
    for (size_t i = 0; i < v.n; i++) order[i] = (int)i;
    by_url_rows = &v;
    qsort(order, v.n, sizeof *order, by_url);
    for (char *line = sus, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        char *col[8] = {0};
        int nc = 0;
        for (char *t = line, *tab; t && nc < 8; t = tab ? tab + 1 : NULL) {
            col[nc++] = t;
            if ((tab = strchr(t, '\t'))) *tab = '\0';
        }
        if (nc < 6 || !strncmp(col[0], "url", 3)) continue;
        int label = !strcmp(col[5], "label");
        if (!label && strcmp(col[5], "duplicate")) continue;
        label ? lab_found++ : dup_found++;
        const int *at = bsearch(col[0], order, v.n, sizeof *order, url_cmp);
        if (!at) continue;
        const row *w = &v.r[*at];
        if (label && w->kind == 'i' && w->label != w->truth) {
            lab_true++;
            lab_right += !strcmp(col[3], classes[w->truth]);
        } else if (!label && (w->kind == 'n' || w->near_orig)) {
            dup_true++; /* either copy of a planted pair */
        }
    }
    free(order);
    free(sus);
    printf("\nlabel issues: %ld found, %ld of them planted (of %ld planted; %ld suggest the true "
           "class)\nnear-duplicates: %ld pairs found, %ld of them planted (of %ld planted); "
           "the %ld exact copies were caught at ingest as duplicates\n",
           lab_found, lab_true, flipped, lab_right, dup_found, dup_true, nnear, ndup);
    printf("(all suspects, most likely first: %s/suspects.tsv; in a browser: the console's "
           "cleaner)\n", out);

    /* ---- accept the suggestions, retrain ---- */
    stage("ursa clean --accept-suggestions, then the retrain");
    if (oof > 0.5) /* a model that wrong is no judge: its suggestions would do harm */
        printf("the audit's models got %.0f%% of the images wrong out of fold: too weak to "
               "trust, so no suggestion is accepted\n", 100 * oof);
    l.n = 0;
    /* relabel what the audit is sure of, delete what it is fairly sure is
     * wrong (the scores' bands held that many planted flips, measured) */
    CL(&l, "clean", "--dataset", ds, "--accept-suggestions", "--kinds", "label", "--min-score",
       "0.98", "--delete-score", "0.95");
    if (oof <= 0.5 && cl_run(&l, NULL)) goto out;
    l.n = 0; /* near-duplicates: only copies this close (look-alikes are not dirt) */
    CL(&l, "clean", "--dataset", ds, "--accept-suggestions", "--kinds", "duplicate", "--min-score",
       "0.995");
    if (oof <= 0.5 && cl_run(&l, NULL)) goto out;
    /* the retrain: the first model's body fine-tuned on the cleaned data,
     * the lesson's freeze (a new head alone) then unfreeze with
     * discriminative learning rates */
    l.n = 0;
    CL(&l, "train", "--dataset", ds);
    cl_add(&l, recipe, NRECIPE);
    CL(&l, "--pretrained", before, "--stage", "1:1e-2", "--unfreeze", "--stage",
       quick ? "1:1e-3:5e-3" : "2:1e-3:5e-3");
    if (cl_run(&l, &txt)) goto out;
    char m2[128] = "";
    line_field(txt, "model ", m2, sizeof m2);
    free(txt);
    txt = NULL;
    if (!m2[0] || URSA("export", m2, after)) goto out;

    stage("the test set: the official test images, which no model has seen");
    double acc1 = test_accuracy(before, test, ntest, ttruth);
    double acc2 = test_accuracy(after, test, ntest, ttruth);
    if (acc1 < 0 || acc2 < 0) {
        fprintf(stderr, "ursa demo: ursa predict failed on the test images\n");
        goto out;
    }
    printf("test accuracy on %d images: %.2f%% before cleaning, %.2f%% after\n", ntest,
           100 * acc1, 100 * acc2);

    /* ---- serve ---- */
    stage("ursa-inference: the model served over HTTP");
    char pf[4300];
    int iport = statedir_path(c, "run/inference.port", pf, sizeof pf) == URSA_OK ? read_int_file(pf) : -1;
    if (iport <= 0) {
        fprintf(stderr, "ursa demo: ursa-inference is not running (ursa status)\n");
        goto out;
    }
    char api[128], models[256];
    snprintf(api, sizeof api, "http://127.0.0.1:%d", iport);
    snprintf(models, sizeof models, "%s/v1/models", api);
    for (int i = 0; i < 150; i++) { /* the newest model is loaded within seconds */
        char *mj = NULL;
        runv(0, &mj, "/usr/bin/curl", (const char *const[]){"-sf", models, NULL});
        int ok = mj && strstr(mj, m2) != NULL;
        free(mj);
        if (ok) break;
        usleep(200000);
    }
    for (int i = 0; i < 3; i++) {
        int t = (int)(rnd() % (uint64_t)ntest);
        char img[4300], body[4400], url[200];
        snprintf(img, sizeof img, "%s/%s/%d.jpg", test, classes[ttruth[t]], t);
        snprintf(body, sizeof body, "@%s", img);
        snprintf(url, sizeof url, "%s/v1/classify?top=2", api);
        printf("$ curl -s -X POST --data-binary %s '%s'    (a %s)\n", body, url, classes[ttruth[t]]);
        runv(1, NULL, "/usr/bin/curl", (const char *const[]){"-s", "-X", "POST", "--data-binary",
                                                               body, url, NULL});
        printf("\n");
    }
    {
        char url[600];
        int t = (int)(rnd() % (uint64_t)n);
        snprintf(url, sizeof url, "%s/v1/classify-url?url=%s/ds/%s/%d.jpg", api, base,
                 classes[truth[t]], t);
        printf("$ curl -s '%s'    (a %s)\n", url, classes[truth[t]]);
        runv(1, NULL, "/usr/bin/curl", (const char *const[]){"-s", url, NULL});
        printf("\n");
    }
    stage(NULL);

    /* ---- the summary ---- */
    char con[200] = "(not running)";
    if (statedir_path(c, "run/console.port", pf, sizeof pf) == URSA_OK && read_int_file(pf) > 0) {
        char tok[4300];
        statedir_path(c, "run/console.token", tok, sizeof tok);
        snprintf(con, sizeof con, "http://127.0.0.1:%d/ (the token: %.120s)", read_int_file(pf), tok);
    }
    char *sum = NULL;
    size_t sumlen = 0;
    FILE *m = open_memstream(&sum, &sumlen);
    if (!m) goto out;
    fprintf(m, "# ursa demo: the lesson on Fashion-MNIST, %d training images\n\n", n);
    fprintf(m, "## The data\n\n%zu URLs ingested into dataset `%s`; what became of them "
               "(`ursa status --dataset %s`):\n\n```\n%s```\n\n", v.n, ds, ds, status ? status : "");
    fprintf(m, "## Cleaning\n\n| | found | of them planted | planted |\n| --- | ---: | ---: | ---: |\n");
    fprintf(m, "| label issues | %ld | %ld (%ld suggest the true class) | %ld |\n", lab_found,
            lab_true, lab_right, flipped);
    fprintf(m, "| near-duplicate pairs | %ld | %ld | %ld |\n\n", dup_found, dup_true, nnear);
    fprintf(m, "## Accuracy on the %d official test images\n\n| model | accuracy |\n| --- | ---: |\n"
               "| `%s`, before cleaning | %.2f%% |\n| `%s`, after cleaning | %.2f%% |\n\n",
            ntest, m1, 100 * acc1, m2, 100 * acc2);
    fprintf(m, "## Time of each stage\n\n| stage | seconds |\n| --- | ---: |\n");
    for (int i = 0; i < ntimes; i++) fprintf(m, "| %s | %.1f |\n", times[i].name, times[i].s);
    fprintf(m, "| **all** | **%.1f** |\n\n", now_s() - t0);
    fprintf(m, "## Files\n\n- the model: `%s` (before cleaning: `%s`)\n- plots: `%s`, `%s`\n"
               "- the URL list `%s/urls.csv`, what was planted `%s/planted.tsv`, the audit's "
               "suspects `%s/suspects.tsv`\n- the console: %s\n- the classifier's API: %s/v1/classify\n",
            after, before, plot, cm, out, out, out, con, api);
    fclose(m);
    snprintf(p, sizeof p, "%s/summary.md", out);
    util_write_file_atomic(p, sum, sumlen);
    printf("\n== summary (also in %s)\n\n%s", p, sum);
    printf("\nThe stack keeps running (ursa status); stop it with: ursa down\n");
    free(sum);
    rc = 0;
out:
    stop_server();
    free(txt);
    free(status);
    free(v.r);
    free(truth);
    free(ttruth);
    return rc;
}
