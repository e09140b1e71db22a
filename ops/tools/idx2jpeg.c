/* idx2jpeg: writes the images of an IDX file pair (MNIST, Fashion-MNIST) as
 * JPEG files and one URL list per class, for the ingest benchmark and the
 * demo.
 *
 *   idx2jpeg IMAGES.gz LABELS.gz OUTDIR BASEURL [--size WxH] [--limit N] [--offset K]
 *
 * writes OUTDIR/<class>/<index>.jpg and OUTDIR/urls_<class>.txt with
 * BASEURL/<class>/<index>.jpg per line. --size scales each image up
 * (bilinear, with a soft vignette so the JPEG has photo-like content) to
 * make photo-sized files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idx.h"
#include "image.h"
#include "util.h"

#define fashion idx_fashion_classes

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: idx2jpeg IMAGES.gz LABELS.gz OUTDIR BASEURL [--size WxH] "
                        "[--limit N] [--offset K]\n");
        return 2;
    }
    int W = 0, H = 0;
    long limit = -1, offset = 0;
    for (int i = 5; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--size") && sscanf(argv[i + 1], "%dx%d", &W, &H) == 2) continue;
        if (!strcmp(argv[i], "--limit")) limit = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--offset")) offset = atol(argv[i + 1]);
        else {
            fprintf(stderr, "idx2jpeg: bad option %s\n", argv[i]);
            return 2;
        }
    }
    unsigned char *im, *lb;
    const unsigned char *pixels, *labels;
    long n;
    int rows, cols;
    if (idx_load(argv[1], argv[2], &n, &rows, &cols, &pixels, &labels, &im, &lb)) {
        fprintf(stderr, "idx2jpeg: cannot read IDX files %s %s\n", argv[1], argv[2]);
        return 1;
    }
    if (!W) W = cols, H = rows;
    FILE *lists[10] = {0};
    char path[4096];
    for (int c = 0; c < 10; c++) {
        snprintf(path, sizeof path, "%s/%s", argv[3], fashion[c]);
        util_mkdirs(path);
        snprintf(path, sizeof path, "%s/urls_%s.txt", argv[3], fashion[c]);
        lists[c] = fopen(path, "w");
        if (!lists[c]) {
            perror(path);
            return 1;
        }
    }
    img_rgb out = {W, H, malloc((size_t)W * H * 3), W, H, 0};
    long written = 0;
    for (long i = offset; i < n && (limit < 0 || written < limit); i++) {
        const unsigned char *src = pixels + (size_t)i * rows * cols;
        int label = labels[i];
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                float fx = (x + 0.5f) * cols / W - 0.5f, fy = (y + 0.5f) * rows / H - 0.5f;
                int x0 = fx < 0 ? 0 : (int)fx, y0 = fy < 0 ? 0 : (int)fy;
                int x1 = x0 + 1 < cols ? x0 + 1 : x0, y1 = y0 + 1 < rows ? y0 + 1 : y0;
                float ax = fx - x0 < 0 ? 0 : fx - x0, ay = fy - y0 < 0 ? 0 : fy - y0;
                float v = (1 - ay) * ((1 - ax) * src[y0 * cols + x0] + ax * src[y0 * cols + x1]) +
                          ay * ((1 - ax) * src[y1 * cols + x0] + ax * src[y1 * cols + x1]);
                uint8_t *p = out.px + ((size_t)y * W + x) * 3;
                if (W != cols) { /* photo-like: tint and a soft background gradient */
                    float g = 40.0f + 60.0f * (float)(x + y) / (float)(W + H);
                    p[0] = (uint8_t)(v > g ? v : g);
                    p[1] = (uint8_t)((v > g ? v : g) * 0.9f);
                    p[2] = (uint8_t)((v > g ? v : g) * 0.8f + 20);
                } else {
                    p[0] = p[1] = p[2] = (uint8_t)v;
                }
            }
        uint8_t *jpeg;
        size_t jl;
        if (img_encode_jpeg(&out, 90, &jpeg, &jl)) return 1;
        snprintf(path, sizeof path, "%s/%s/%ld.jpg", argv[3], fashion[label], i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(jpeg, 1, jl, f) != jl) {
            perror(path);
            return 1;
        }
        fclose(f);
        free(jpeg);
        fprintf(lists[label], "%s/%s/%ld.jpg\n", argv[4], fashion[label], i);
        written++;
    }
    for (int c = 0; c < 10; c++) fclose(lists[c]);
    printf("%ld images of %dx%d written to %s\n", written, W, H, argv[3]);
    free(out.px);
    free(im);
    free(lb);
    return 0;
}
