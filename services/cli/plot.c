/* plot.c: SVG charts; see plot.h. */
#include "plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

int plot_path_ok(const char *path) {
    size_t n = strlen(path);
    return n > 4 && !strcmp(path + n - 4, ".svg");
}

static void esc(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

/* Writes the memstream's text to path atomically. */
static int finish(FILE *f, char **buf, size_t *len, const char *path) {
    int rc = fclose(f) == 0 && util_write_file_atomic(path, *buf, *len) == URSA_OK ? 0 : -1;
    free(*buf);
    return rc;
}

int plot_lr_svg(const char *path, const double *lr, const double *loss, int n, double sug) {
    const double W = 640, H = 420, L = 70, R = 20, T = 40, B = 60;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return -1;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (!(lr[i] > 0) || !isfinite(loss[i])) continue;
        x0 = fmin(x0, log10(lr[i]));
        x1 = fmax(x1, log10(lr[i]));
        y0 = fmin(y0, loss[i]);
        y1 = fmax(y1, loss[i]);
    }
    if (!(x1 > x0)) x0 = -7, x1 = 1;
    if (!(y1 > y0)) y0 = 0, y1 = y0 + 1;
    x0 = floor(x0), x1 = ceil(x1);
    double pad = (y1 - y0) * 0.05;
    y0 -= pad, y1 += pad;
#define PX(v) (L + ((v) - x0) / (x1 - x0) * (W - L - R))
#define PY(v) (H - B - ((v) - y0) / (y1 - y0) * (H - T - B))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
               "<text x=\"%.0f\" y=\"24\" font-size=\"15\">lr_find: loss against learning rate"
               "</text>\n",
            W, H, L);
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
               "stroke=\"#444\"/>\n", L, T, W - L - R, H - T - B);
    for (int d = (int)x0; d <= (int)x1; d++) {
        double x = PX(d);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#ddd\"/>\n"
                   "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">1e%d</text>\n",
                x, T, x, H - B, x, H - B + 18, d);
    }
    for (int k = 0; k <= 4; k++) {
        double v = y0 + (y1 - y0) * k / 4, y = PY(v);
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
                   "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>\n",
                L, y, W - R, y, L - 6, y + 4, v);
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">learning rate (log scale)"
               "</text>\n<text transform=\"translate(16 %.0f) rotate(-90)\" "
               "text-anchor=\"middle\">loss (smoothed)</text>\n",
            (L + W - R) / 2, H - 16, (T + H - B) / 2);
    fprintf(f, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"");
    for (int i = 0; i < n; i++)
        if (lr[i] > 0 && isfinite(loss[i]))
            fprintf(f, "%.1f,%.1f ", PX(log10(lr[i])), PY(loss[i]));
    fprintf(f, "\"/>\n");
    if (sug > 0) {
        double x = PX(log10(sug));
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#d62728\" "
                   "stroke-dasharray=\"4 3\"/>\n<text x=\"%.1f\" y=\"%.0f\" fill=\"#d62728\">"
                   "suggested %.2e</text>\n",
                x, T, x, H - B, x + 4, T + 14, sug);
    }
    fprintf(f, "</svg>\n");
#undef PX
#undef PY
    return finish(f, &buf, &len, path);
}

int plot_confusion_svg(const char *path, const char *const *classes, int n, const long *counts,
                       const char *title) {
    const double cell = n <= 10 ? 48 : n <= 30 ? 24 : 12, L = 140, T = 60;
    double W = L + cell * n + 30, H = T + cell * n + 120;
    long mx = 1;
    for (int i = 0; i < n * n; i++)
        if (counts[i] > mx) mx = counts[i];
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return -1;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"10\" y=\"24\" "
               "font-size=\"15\">",
            W, H);
    esc(f, title);
    fprintf(f, "</text>\n");
    for (int a = 0; a < n; a++)
        for (int p = 0; p < n; p++) {
            long v = counts[a * n + p];
            double t = (double)v / mx;
            int g = (int)(255 - 200 * t);
            fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" "
                       "fill=\"rgb(%d,%d,255)\" stroke=\"#fff\"><title>actual ",
                    L + p * cell, T + a * cell, cell, cell, g, g);
            esc(f, classes[a]);
            fprintf(f, ", predicted ");
            esc(f, classes[p]);
            fprintf(f, ": %ld</title></rect>\n", v);
            if (cell >= 24)
                fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\" fill=\"%s\">%ld"
                           "</text>\n",
                        L + p * cell + cell / 2, T + a * cell + cell / 2 + 4,
                        t > 0.6 ? "white" : "black", v);
        }
    for (int i = 0; i < n; i++) {
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">", L - 6,
                T + i * cell + cell / 2 + 4);
        esc(f, classes[i]);
        fprintf(f, "</text>\n<text transform=\"translate(%.0f %.0f) rotate(45)\">",
                L + i * cell + cell / 2 - 4, T + n * cell + 16);
        esc(f, classes[i]);
        fprintf(f, "</text>\n");
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">predicted</text>\n"
               "<text transform=\"translate(14 %.0f) rotate(-90)\" text-anchor=\"middle\">actual"
               "</text>\n</svg>\n",
            L + cell * n / 2, H - 10, T + cell * n / 2);
    return finish(f, &buf, &len, path);
}
