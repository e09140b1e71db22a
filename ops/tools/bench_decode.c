/* bench_decode.c: what decoding a large photo costs, the way ursa did it
 * before (the whole image, then shrunk) and the way it does now (JPEG and
 * WebP decoded scaled, at the smallest 1/2, 1/4 or 1/8 still at least the
 * target): the median time and the process's peak memory, each way in a
 * fresh process so one's peak does not hide the other's.
 *   bench-decode FILE [--iters N] [--size PX] [--verify-size PX]
 * Two paths: into a model of --size px (decode + nn_preprocess, as the
 * inference server and `ursa predict` do), and the verifier's (decode, fit
 * to --verify-size px, encode the JPEG it stores). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data.h"
#include "image.h"
#include "nn.h"
#include "util.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* one way, in this process: prints "median_ms peak_kb" on fd */
static int run(const uint8_t *d, size_t n, int iters, int scaled, int model_px, int verify_px,
               int verify, FILE *out) {
    nn_meta mt;
    nn_meta_default(&mt);
    mt.size = model_px;
    float *x = malloc(sizeof(float) * 3 * (size_t)model_px * (size_t)model_px);
    double *t = calloc((size_t)iters, sizeof *t);
    if (!x || !t) return 1;
    img_opts vo = img_opts_default();
    vo.max_size = verify_px;
    for (int i = 0; i < iters; i++) {
        img_decode_opts o = img_decode_opts_default();
        o.shrink_to = scaled ? (verify ? verify_px : model_px) : 0;
        img_reject rej;
        img_rgb im, fit;
        double t0 = now_ms();
        if (img_decode(d, n, &o, &im, &rej)) {
            fprintf(stderr, "bench-decode: %s: %s\n", rej.reason, rej.detail);
            return 1;
        }
        if (verify) {
            uint8_t *jpg = NULL;
            size_t jl = 0;
            if (img_fit(&im, verify_px, &fit) || img_encode_jpeg(&fit, vo.jpeg_quality, &jpg, &jl))
                return 1;
            img_free(&fit);
            free(jpg);
        } else {
            nn_preprocess(&im, &mt, 3, x);
        }
        t[i] = now_ms() - t0;
        img_free(&im);
    }
    qsort(t, (size_t)iters, sizeof *t, cmp_d);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    fprintf(out, "%.2f %ld\n", t[iters / 2], ru.ru_maxrss);
    free(t);
    free(x);
    return 0;
}

/* runs one way in a child, reads back its numbers */
static int way(const uint8_t *d, size_t n, int iters, int scaled, int model_px, int verify_px,
               int verify, double *ms, long *kb) {
    int p[2];
    if (pipe(p)) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(p[0]);
        FILE *f = fdopen(p[1], "w");
        int rc = run(d, n, iters, scaled, model_px, verify_px, verify, f);
        fclose(f);
        _exit(rc);
    }
    close(p[1]);
    FILE *f = fdopen(p[0], "r");
    int got = fscanf(f, "%lf %ld", ms, kb);
    fclose(f);
    int st;
    waitpid(pid, &st, 0);
    return got == 2 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *file = NULL;
    int iters = 9, model_px = 224, verify_px = 500;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) model_px = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--verify-size") && i + 1 < argc) verify_px = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--help") || argv[i][0] == '-' || file) {
            fprintf(stderr, "usage: bench-decode FILE [--iters N] [--size PX] [--verify-size PX]\n"
                            "  the median time and peak RSS of decoding FILE into a PX model\n"
                            "  and through the verifier, whole then shrunk (before) and\n"
                            "  decoded scaled (now), each in a fresh process\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        } else file = argv[i];
    }
    if (!file || iters < 1 || model_px < 8 || verify_px < 8) {
        fprintf(stderr, "bench-decode: give a FILE (--help)\n");
        return 2;
    }
    char *d = NULL;
    size_t n = 0;
    if (util_read_file(file, (size_t)256 << 20, &d, &n)) {
        fprintf(stderr, "bench-decode: cannot read %s\n", file);
        return 1;
    }
    img_format fmt;
    int w = 0, h = 0;
    img_probe((const uint8_t *)d, n, &fmt, &w, &h);
    printf("%s: %s %dx%d, %zu bytes; %d iterations each, median\n", file, img_format_name(fmt), w,
           h, n, iters);
    printf("%-28s %10s %12s %10s %12s %8s %8s\n", "path", "full_ms", "full_peak_MB", "scaled_ms",
           "scaled_peak_MB", "speedup", "mem_x");
    for (int verify = 0; verify < 2; verify++) {
        double ms[2];
        long kb[2];
        for (int scaled = 0; scaled < 2; scaled++)
            if (way((const uint8_t *)d, n, iters, scaled, model_px, verify_px, verify, &ms[scaled],
                    &kb[scaled])) {
                fprintf(stderr, "bench-decode: a run failed\n");
                return 1;
            }
        char name[64];
        snprintf(name, sizeof name, verify ? "verifier (fit %d, JPEG)" : "model input (%d px)",
                 verify ? verify_px : model_px);
        printf("%-28s %10.2f %12.1f %10.2f %12.1f %7.1fx %7.1fx\n", name, ms[0], kb[0] / 1024.0,
               ms[1], kb[1] / 1024.0, ms[0] / ms[1], (double)kb[0] / (double)kb[1]);
    }
    free(d);
    return 0;
}
