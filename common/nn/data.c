/* data.c: transforms and the batch loader; see data.h.
 *
 * An image is first area-averaged so its shorter side is the model's size
 * (when it is larger), then sampled: validation takes the centre crop,
 * training a random crop seen through fast.ai's transforms, composed into
 * one coordinate map and sampled bilinearly with reflection at the edges,
 * as fast.ai v1 does with grid_sample. */
#include "data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

nn_aug nn_aug_fastai(void) {
    nn_aug a = {1, 10.0f, 1.1f, 0.2f, 0.2f, 0.75f, 0.75f, 0};
    return a;
}

nn_aug nn_aug_none(void) {
    nn_aug a = {0, 0, 1.0f, 0, 0, 0, 0, 0};
    return a;
}

static double urand(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return (x >> 11) / 9007199254740992.0;
}

/* shorter side to size by area averaging (larger images only) */
static int prescale(const img_rgb *im, int size, img_rgb *out) {
    int s = im->w < im->h ? im->w : im->h, l = im->w < im->h ? im->h : im->w;
    int max_side = (int)((double)l * size / s + 0.5);
    if (s <= size) max_side = l; /* copy unchanged */
    return img_fit(im, max_side, out) == URSA_OK ? 0 : -1;
}

static inline float reflect(float v, int n) {
    /* reflection about the pixel-centre edges -0.5 and n - 0.5, in closed
     * form: the loop that reflected again and again never ended on an
     * infinite coordinate (a near-singular perspective warp can give one),
     * and took a step per image width on a far one */
    if (n == 1 || !isfinite(v)) return 0;
    double span = n, p = fmod((double)v + 0.5, 2 * span);
    if (p < 0) p += 2 * span;
    if (p > span) p = 2 * span - p;
    v = (float)(p - 0.5);
    if (v < 0) v = 0;
    if (v > n - 1) v = (float)(n - 1);
    return v;
}

static void normalise_into(const float rgb[3], const nn_meta *mt, int in_c, float *out,
                           size_t plane, size_t at) {
    if (in_c == 1) {
        float g = 0.299f * rgb[0] + 0.587f * rgb[1] + 0.114f * rgb[2];
        out[at] = (g - mt->mean[0]) / mt->std[0];
    } else {
        for (int c = 0; c < 3; c++) out[c * plane + at] = (rgb[c] - mt->mean[c]) / mt->std[c];
    }
}

ursa_err nn_decode_image(const uint8_t *data, size_t len, const nn_meta *mt,
                         const img_decode_opts *o, img_rgb *out, img_reject *rej) {
    img_decode_opts d = o ? *o : img_decode_opts_default();
    d.shrink_to = mt->size;
    return img_decode(data, len, &d, out, rej);
}

typedef struct {
    int i;
    float p;
} ranked;

static int by_prob(const void *a, const void *b) {
    float x = ((const ranked *)a)->p, y = ((const ranked *)b)->p;
    return x < y ? 1 : x > y ? -1 : ((const ranked *)a)->i - ((const ranked *)b)->i;
}

void nn_rank(const float *prob, int c, int *order) {
    ranked stack[64], *r = c <= 64 ? stack : malloc(sizeof(ranked) * (size_t)c);
    if (!r) { /* out of memory: the natural order */
        for (int j = 0; j < c; j++) order[j] = j;
        return;
    }
    for (int j = 0; j < c; j++) r[j].i = j, r[j].p = prob[j];
    qsort(r, (size_t)c, sizeof *r, by_prob);
    for (int j = 0; j < c; j++) order[j] = r[j].i;
    if (r != stack) free(r);
}

void nn_preprocess(const img_rgb *im, const nn_meta *mt, int in_c, float *out) {
    nn_aug none = nn_aug_none();
    nn_augment(im, mt, in_c, &none, NULL, out);
}

/* ---- test-time augmentation ---- */

int nn_tta_parse(const char *s, unsigned *mode) {
    static const struct {
        const char *name;
        unsigned mode;
    } t[] = {{"off", NN_TTA_OFF}, {"", NN_TTA_OFF}, {"flip", NN_TTA_FLIP}, {"shift", NN_TTA_SHIFT},
             {"flip+shift", NN_TTA_FLIP | NN_TTA_SHIFT}, {"flip,shift", NN_TTA_FLIP | NN_TTA_SHIFT},
             {"shift+flip", NN_TTA_FLIP | NN_TTA_SHIFT}, {"shift,flip", NN_TTA_FLIP | NN_TTA_SHIFT}};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (!strcmp(s, t[i].name)) return *mode = t[i].mode, 0;
    return -1;
}

const char *nn_tta_name(unsigned mode) {
    static const char *const n[] = {"off", "flip", "shift", "flip+shift"};
    return n[mode & 3];
}

int nn_tta_views(unsigned mode) {
    return (mode & NN_TTA_SHIFT ? 5 : 1) * (mode & NN_TTA_FLIP ? 2 : 1);
}

/* x moved by (dx, dy), its edges reflected, mirrored when mir */
static void tta_view(const float *x, int c, int h, int w, int dx, int dy, int mir, float *out) {
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < h; y++) {
            int sy = y - dy;
            sy = sy < 0 ? -sy : sy >= h ? 2 * h - 2 - sy : sy;
            sy = sy < 0 ? 0 : sy >= h ? h - 1 : sy; /* images of a pixel or two */
            const float *row = x + ((size_t)ch * h + (size_t)sy) * w;
            float *o = out + ((size_t)ch * h + (size_t)y) * w;
            for (int xx = 0; xx < w; xx++) {
                int sx = (mir ? w - 1 - xx : xx) - dx;
                sx = sx < 0 ? -sx : sx >= w ? 2 * w - 2 - sx : sx;
                sx = sx < 0 ? 0 : sx >= w ? w - 1 : sx;
                o[xx] = row[sx];
            }
        }
}

void nn_tta_view(const float *x, int c, int h, int w, unsigned mode, int v, float *out) {
    int d = h / 28 > 1 ? h / 28 : 1, ns = mode & NN_TTA_SHIFT ? 5 : 1;
    const int sh[5][2] = {{0, 0}, {d, 0}, {-d, 0}, {0, d}, {0, -d}};
    tta_view(x, c, h, w, sh[v % ns][0], sh[v % ns][1], v >= ns, out);
}

void nn_tta_expand(const float *x, int c, int h, int w, unsigned mode, float *out) {
    size_t per = (size_t)c * h * w;
    for (int v = 0, k = nn_tta_views(mode); v < k; v++)
        nn_tta_view(x, c, h, w, mode, v, out + per * (size_t)v);
}

void nn_tta_mean(float *p, int n, int k, int c) {
    for (int i = 0; i < n; i++) {
        float acc[1024];
        for (int j0 = 0; j0 < c; j0 += 1024) { /* in chunks: any number of classes */
            int m = c - j0 < 1024 ? c - j0 : 1024;
            for (int j = 0; j < m; j++) acc[j] = 0;
            for (int v = 0; v < k; v++)
                for (int j = 0; j < m; j++) acc[j] += p[((size_t)i * k + v) * c + j0 + j];
            for (int j = 0; j < m; j++) p[(size_t)i * c + j0 + j] = acc[j] / (float)k;
        }
    }
}

/* solve the 8x8 system of a perspective map taking src corners to dst */
static void perspective_coeffs(const float src[4][2], const float dst[4][2], double c[8]) {
    double a[8][9];
    for (int i = 0; i < 4; i++) {
        double x = src[i][0], y = src[i][1], u = dst[i][0], v = dst[i][1];
        double r1[9] = {x, y, 1, 0, 0, 0, -u * x, -u * y, u};
        double r2[9] = {0, 0, 0, x, y, 1, -v * x, -v * y, v};
        memcpy(a[2 * i], r1, sizeof r1);
        memcpy(a[2 * i + 1], r2, sizeof r2);
    }
    for (int col = 0; col < 8; col++) {
        int piv = col;
        for (int r = col + 1; r < 8; r++)
            if (fabs(a[r][col]) > fabs(a[piv][col])) piv = r;
        for (int k = 0; k < 9; k++) {
            double t = a[col][k];
            a[col][k] = a[piv][k];
            a[piv][k] = t;
        }
        for (int r = 0; r < 8; r++) {
            if (r == col || a[col][col] == 0) continue;
            double f = a[r][col] / a[col][col];
            for (int k = col; k < 9; k++) a[r][k] -= f * a[col][k];
        }
    }
    for (int i = 0; i < 8; i++) c[i] = a[i][i] ? a[i][8] / a[i][i] : (i == 0 || i == 4);
}

void nn_augment(const img_rgb *im0, const nn_meta *mt, int in_c, const nn_aug *a, uint64_t *rng,
                float *out) {
    int size = mt->size;
    img_rgb im;
    if (prescale(im0, size, &im)) { /* out of memory: a grey image */
        for (size_t i = 0; i < (size_t)in_c * size * size; i++) out[i] = 0;
        return;
    }
    int W = im.w, H = im.h, sh = W < H ? W : H;
    float scale = (float)sh / size; /* resized -> source pixels */
    /* the crop window in resized pixels */
    float rw = W / scale, rh = H / scale;
    float ox = (rw - size) / 2, oy = (rh - size) / 2;
    int flip = 0, affine = 0, warp = 0, light = 0;
    float rot = 0, zoom = 1, zc_x = 0, zc_y = 0, bright = 0.5f, contrast = 1, shx = 0, shy = 0;
    double pc[8] = {1, 0, 0, 0, 1, 0, 0, 0};
    if (rng) {
        ox = (float)(urand(rng) * (rw - size));
        oy = (float)(urand(rng) * (rh - size));
        if (a->pad > 0) {
            shx = (float)(int)(urand(rng) * (2 * a->pad + 1)) - a->pad;
            shy = (float)(int)(urand(rng) * (2 * a->pad + 1)) - a->pad;
        }
        flip = a->flip && urand(rng) < 0.5;
        if (a->max_rotate > 0 && urand(rng) < a->p_affine) {
            rot = (float)((urand(rng) * 2 - 1) * a->max_rotate * M_PI / 180);
            affine = 1;
        }
        if (a->max_zoom > 1 && urand(rng) < a->p_affine) {
            zoom = (float)(1 + urand(rng) * (a->max_zoom - 1));
            zc_x = (1 - 1 / zoom) * (float)(2 * urand(rng) - 1);
            zc_y = (1 - 1 / zoom) * (float)(2 * urand(rng) - 1);
            affine = 1;
        }
        if (a->max_warp > 0 && urand(rng) < a->p_affine) {
            float m[4];
            for (int i = 0; i < 4; i++) m[i] = (float)((urand(rng) * 2 - 1) * a->max_warp);
            const float src[4][2] = {{-1, -1}, {-1, 1}, {1, -1}, {1, 1}};
            const float dst[4][2] = {{-1 - m[3], -1 - m[1]}, {-1 - m[2], 1 + m[1]},
                                     {1 + m[3], -1 - m[0]}, {1 + m[2], 1 + m[0]}};
            perspective_coeffs(src, dst, pc);
            warp = 1;
        }
        if (a->max_lighting > 0 && urand(rng) < a->p_lighting) {
            bright = (float)(0.5 * (1 - a->max_lighting) + urand(rng) * a->max_lighting);
            light = 1;
        }
        if (a->max_lighting > 0 && urand(rng) < a->p_lighting) {
            double lo = log(1 - a->max_lighting), hi = -lo;
            contrast = (float)exp(lo + urand(rng) * (hi - lo));
            light = 1;
        }
    }
    float cr = cosf(rot), sr = sinf(rot);
    float lb = logf(bright / (1 - bright));
    size_t plane = (size_t)size * size;
    int exact = !flip && !affine && !warp && scale == 1.0f && ox == (int)ox && oy == (int)oy;
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++) {
            float rgb[3];
            if (exact) {
                int sx = (int)(x + ox + shx), sy = (int)(y + oy + shy);
                sx = (int)reflect((float)sx, W);
                sy = (int)reflect((float)sy, H);
                const uint8_t *p = im.px + ((size_t)sy * W + sx) * 3;
                for (int c = 0; c < 3; c++) rgb[c] = p[c] / 255.0f;
            } else {
                /* output pixel centre in [-1, 1] */
                float u = (x + 0.5f) / size * 2 - 1, v = (y + 0.5f) / size * 2 - 1;
                if (warp) {
                    double d = pc[6] * u + pc[7] * v + 1;
                    float nu = (float)((pc[0] * u + pc[1] * v + pc[2]) / d);
                    float nv = (float)((pc[3] * u + pc[4] * v + pc[5]) / d);
                    u = nu, v = nv;
                }
                if (affine) {
                    float nu = (cr * u - sr * v) / zoom + zc_x, nv = (sr * u + cr * v) / zoom + zc_y;
                    u = nu, v = nv;
                }
                if (flip) u = -u;
                float sx = ((u + 1) / 2 * size + ox + shx) * scale - 0.5f;
                float sy = ((v + 1) / 2 * size + oy + shy) * scale - 0.5f;
                sx = reflect(sx, W);
                sy = reflect(sy, H);
                int x0 = (int)sx, y0 = (int)sy;
                int x1 = x0 + 1 < W ? x0 + 1 : x0, y1 = y0 + 1 < H ? y0 + 1 : y0;
                float fx = sx - x0, fy = sy - y0;
                const uint8_t *p00 = im.px + ((size_t)y0 * W + x0) * 3;
                const uint8_t *p01 = im.px + ((size_t)y0 * W + x1) * 3;
                const uint8_t *p10 = im.px + ((size_t)y1 * W + x0) * 3;
                const uint8_t *p11 = im.px + ((size_t)y1 * W + x1) * 3;
                for (int c = 0; c < 3; c++)
                    rgb[c] = ((p00[c] * (1 - fx) + p01[c] * fx) * (1 - fy) +
                              (p10[c] * (1 - fx) + p11[c] * fx) * fy) / 255.0f;
            }
            if (light)
                for (int c = 0; c < 3; c++) {
                    float t = rgb[c] < 1e-4f ? 1e-4f : rgb[c] > 1 - 1e-4f ? 1 - 1e-4f : rgb[c];
                    float l = (logf(t / (1 - t)) + lb) * contrast;
                    rgb[c] = 1 / (1 + expf(-l));
                }
            normalise_into(rgb, mt, in_c, out, plane, (size_t)y * size + x);
        }
    img_free(&im);
}

/* ---- loader -------------------------------------------------------------- */

#define SLOTS 3

typedef struct {
    float *x;
    int *y;
    int n;     /* images; 0 marks the end of an epoch */
    int ready; /* filled and not yet taken */
} slot;

struct nn_loader {
    nn_image_fn fn;
    nn_tensor_fn tfn; /* a loader of tensors (fn unused) */
    void *ctx;
    int *idx, *lab, n, bs, train, in_c;
    int *order; /* this epoch's order of the items (the worker's) */
    nn_aug aug;
    int has_aug;
    nn_meta mt;
    uint64_t rng;
    slot s[SLOTS];
    int head, tail; /* consumer takes s[head]; producer fills s[tail] */
    int taken;      /* the slot the consumer holds, -1 none */
    int stop;
    long failed;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void fill(nn_loader *l, slot *s, const int *order, int from, int count) {
    size_t per = (size_t)l->in_c * l->mt.size * l->mt.size;
    int k = 0;
    for (int j = from; j < from + count; j++) {
        img_rgb im = {0};
        int i = order[j];
        if (l->tfn) {
            if (l->tfn(l->ctx, l->idx[i], s->x + per * k))
                __atomic_add_fetch(&l->failed, 1, __ATOMIC_RELAXED);
            else
                s->y[k++] = l->lab[i];
            continue;
        }
        if (l->fn(l->ctx, l->idx[i], &im)) {
            __atomic_add_fetch(&l->failed, 1, __ATOMIC_RELAXED);
            continue;
        }
        if (l->train) nn_augment(&im, &l->mt, l->in_c, l->has_aug ? &l->aug : NULL, &l->rng, s->x + per * k);
        else nn_preprocess(&im, &l->mt, l->in_c, s->x + per * k);
        s->y[k++] = l->lab[i];
        img_free(&im);
    }
    s->n = k;
}

static void *worker(void *arg) {
    nn_loader *l = arg;
    int *order = l->order;
    for (;;) {
        for (int i = 0; i < l->n; i++) order[i] = i;
        if (l->train)
            for (int i = l->n - 1; i > 0; i--) {
                int j = (int)(urand(&l->rng) * (i + 1));
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
        for (int b = 0; b <= nn_loader_batches(l); b++) {
            pthread_mutex_lock(&l->mu);
            while (!l->stop && (l->s[l->tail].ready || l->tail == l->taken))
                pthread_cond_wait(&l->cv, &l->mu);
            if (l->stop) {
                pthread_mutex_unlock(&l->mu);
                return NULL;
            }
            slot *s = &l->s[l->tail];
            pthread_mutex_unlock(&l->mu);
            int from = b * l->bs, cnt = l->n - from < l->bs ? l->n - from : l->bs;
            if (b == nn_loader_batches(l)) cnt = 0; /* the end marker */
            if (cnt > 0) fill(l, s, order, from, cnt);
            else s->n = 0; /* end of epoch */
            if (cnt > 0 && s->n == 0) continue; /* every image failed: skip the batch */
            pthread_mutex_lock(&l->mu);
            s->ready = 1;
            l->tail = (l->tail + 1) % SLOTS;
            pthread_cond_broadcast(&l->cv);
            pthread_mutex_unlock(&l->mu);
        }
    }
}

static ursa_err loader_new(nn_image_fn fn, nn_tensor_fn tfn, void *ctx, const int *idx,
                           const int *lab, int n, int bs, int train, const nn_aug *aug,
                           const nn_meta *mt, int in_c, uint64_t seed, nn_loader **out) {
    *out = NULL;
    nn_loader *l = calloc(1, sizeof *l);
    if (!l) return URSA_ERR_NOMEM;
    l->fn = fn;
    l->tfn = tfn;
    l->ctx = ctx;
    l->n = n;
    l->bs = bs;
    l->train = train;
    l->in_c = in_c;
    l->taken = -1;
    l->rng = seed ? seed : 1;
    if (aug) l->aug = *aug, l->has_aug = 1;
    else l->aug = nn_aug_none();
    l->has_aug = 1;
    l->idx = malloc(sizeof(int) * (size_t)n);
    l->lab = malloc(sizeof(int) * (size_t)n);
    l->order = malloc(sizeof(int) * (size_t)n);
    if (!l->idx || !l->lab || !l->order || nn_meta_copy(mt, &l->mt) != URSA_OK) goto nomem;
    memcpy(l->idx, idx, sizeof(int) * (size_t)n);
    memcpy(l->lab, lab, sizeof(int) * (size_t)n);
    size_t per = (size_t)in_c * mt->size * mt->size;
    for (int i = 0; i < SLOTS; i++) {
        l->s[i].x = malloc(sizeof(float) * per * (size_t)bs);
        l->s[i].y = malloc(sizeof(int) * (size_t)bs);
        if (!l->s[i].x || !l->s[i].y) goto nomem;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    if (pthread_create(&l->th, NULL, worker, l)) {
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
        goto nomem;
    }
    *out = l;
    return URSA_OK;
nomem:
    for (int i = 0; i < SLOTS; i++) free(l->s[i].x), free(l->s[i].y);
    free(l->idx);
    free(l->lab);
    free(l->order);
    nn_meta_free(&l->mt);
    free(l);
    return URSA_ERR_NOMEM;
}

ursa_err nn_loader_new(nn_image_fn fn, void *ctx, const int *idx, const int *lab, int n, int bs,
                       int train, const nn_aug *aug, const nn_meta *mt, int in_c, uint64_t seed,
                       nn_loader **out) {
    *out = NULL;
    if (n < 1 || bs < 1 || (in_c != 1 && in_c != 3)) return URSA_ERR_INVALID;
    return loader_new(fn, NULL, ctx, idx, lab, n, bs, train, aug, mt, in_c, seed, out);
}

ursa_err nn_loader_new_tensors(nn_tensor_fn fn, void *ctx, const int *idx, const int *lab, int n,
                               int bs, int train, int dim, uint64_t seed, nn_loader **out) {
    *out = NULL;
    if (n < 1 || bs < 1 || dim < 1) return URSA_ERR_INVALID;
    nn_meta mt;
    nn_meta_default(&mt);
    mt.size = 1; /* a tensor is dim x 1 x 1 */
    ursa_err e = loader_new(NULL, fn, ctx, idx, lab, n, bs, train, NULL, &mt, dim, seed, out);
    nn_meta_free(&mt);
    return e;
}

int nn_loader_next(nn_loader *l, const float **x, const int **y) {
    pthread_mutex_lock(&l->mu);
    if (l->taken >= 0) { /* give back the previous batch */
        l->s[l->taken].ready = 0;
        l->head = (l->head + 1) % SLOTS;
        l->taken = -1;
        pthread_cond_broadcast(&l->cv);
    }
    while (!l->s[l->head].ready) pthread_cond_wait(&l->cv, &l->mu);
    slot *s = &l->s[l->head];
    int n = s->n;
    if (n == 0) { /* end of epoch: consume the marker */
        s->ready = 0;
        l->head = (l->head + 1) % SLOTS;
        pthread_cond_broadcast(&l->cv);
    } else {
        l->taken = l->head;
        *x = s->x;
        *y = s->y;
    }
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* training drops a last partial batch, as fast.ai does (drop_last), unless
 * it is the only one */
int nn_loader_batches(const nn_loader *l) {
    return l->train && l->n >= l->bs ? l->n / l->bs : (l->n + l->bs - 1) / l->bs;
}
long nn_loader_failed(const nn_loader *l) { return __atomic_load_n(&l->failed, __ATOMIC_RELAXED); }

void nn_loader_free(nn_loader *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->th, NULL);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    for (int i = 0; i < SLOTS; i++) free(l->s[i].x), free(l->s[i].y);
    free(l->idx);
    free(l->lab);
    free(l->order);
    nn_meta_free(&l->mt);
    free(l);
}
