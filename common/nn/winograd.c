/* winograd.c: 3x3 stride-1 pad-1 convolutions as Winograd F(2x2, 3x3):
 * each 2x2 output tile costs 16 multiplies instead of 36. Weights and input
 * tiles are transformed (U = G g G^T, V = B^T d B), the 16 elementwise
 * products become 16 matrix products over channels (sgemm), and A^T M A
 * gives the outputs. The gradient of the input is the same convolution with
 * the kernel flipped and its channels swapped, so it runs here too. The
 * products run on gemm.h's packed kernel where the CPU has it (U and V are
 * then laid out as its panels), else on OpenBLAS. */
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "gemm.h"
#include "winograd.h"

size_t nn_wino_u_n(int cout, int cin, int packed) {
    return 16 * (packed ? nn_gemm_apack_n(cout, cin) : (size_t)cout * cin);
}

size_t nn_wino_v_n(int c, long P) { return 16 * (size_t)c * (size_t)((P + 31) / 32 * 32); }

void nn_wino_weights(const float *w, int cout, int cin, int for_dx, int packed, float *U) {
    /* for_dx: kernel k'[c][o][y][x] = k[o][c][2-y][2-x]; U is [16][cout'][cin'] */
    int co = for_dx ? cin : cout, ci = for_dx ? cout : cin;
    size_t us = packed ? nn_gemm_apack_n(co, ci) : (size_t)co * ci; /* from one xi to the next */
    if (packed && co % NN_GEMM_MR) memset(U, 0, sizeof(float) * 16 * us);
#pragma omp parallel for schedule(static) if ((long)cout * cin > 4096)
    for (int o = 0; o < co; o++)
        for (int c = 0; c < ci; c++) {
            float g[3][3], t[4][3];
            for (int y = 0; y < 3; y++)
                for (int x = 0; x < 3; x++)
                    g[y][x] = for_dx ? w[(((size_t)c * cin + o) * 3 + (2 - y)) * 3 + (2 - x)]
                                     : w[(((size_t)o * cin + c) * 3 + y) * 3 + x];
            for (int x = 0; x < 3; x++) { /* G g */
                t[0][x] = g[0][x];
                t[1][x] = 0.5f * (g[0][x] + g[1][x] + g[2][x]);
                t[2][x] = 0.5f * (g[0][x] - g[1][x] + g[2][x]);
                t[3][x] = g[2][x];
            }
            for (int y = 0; y < 4; y++) { /* (G g) G^T */
                float u[4] = {t[y][0], 0.5f * (t[y][0] + t[y][1] + t[y][2]),
                              0.5f * (t[y][0] - t[y][1] + t[y][2]), t[y][2]};
                /* packed: gemm.h's panels of MR rows, each ci x MR */
                size_t at = packed ? (size_t)(o / NN_GEMM_MR) * NN_GEMM_MR * ci +
                                         (size_t)c * NN_GEMM_MR + o % NN_GEMM_MR
                                   : (size_t)o * ci + c;
                for (int x = 0; x < 4; x++) U[(size_t)(y * 4 + x) * us + at] = u[x];
            }
        }
}

void nn_wino_conv(const float *U, int packed, int cin, int cout, const float *x, size_t xper,
                  int h, int w, int n, float *y, size_t yper, int accumulate, float *V, float *M,
                  float *rows0, size_t rows_n, int par) {
    int th = (h + 1) / 2, tw = (w + 1) / 2, T = th * tw;
    long P = (long)n * T, Pp = (P + 31) / 32 * 32;
    /* V[xi] is cin x P, packed: gemm.h's panels of 32 columns, each cin x 32 */
    size_t st = packed ? (size_t)cin * Pp : (size_t)cin * P; /* from one xi to the next */
    if (packed && Pp > P)
        for (int xi = 0; xi < 16; xi++)
            memset(V + xi * st + (size_t)(P / 32) * cin * 32, 0, sizeof(float) * cin * 32);
    /* input tiles: V[xi][c][p] = (B^T d B)[xi]; four input rows at a time,
     * copied with their zero padding so the tile loop has no bounds */
    int pw = 2 * tw + 2;
#pragma omp parallel if (par)
    {
        float *rows = rows0 + (par ? rows_n * (size_t)omp_get_thread_num() : 0);
#pragma omp for collapse(2) schedule(static)
        for (int i = 0; i < n; i++)
            for (int c = 0; c < cin; c++) {
                const float *xc = x + xper * i + (size_t)c * h * w;
                for (int ty = 0; ty < th; ty++) {
                    for (int a = 0; a < 4; a++) {
                        float *r = rows + (size_t)a * pw;
                        int yy = 2 * ty - 1 + a;
                        memset(r, 0, sizeof(float) * (size_t)pw);
                        if (yy >= 0 && yy < h) memcpy(r + 1, xc + (size_t)yy * w, sizeof(float) * (size_t)w);
                    }
                    const float *r0 = rows, *r1 = rows + pw, *r2 = rows + 2 * pw, *r3 = rows + 3 * pw;
                    long p0 = (long)i * T + (long)ty * tw;
                    for (int tx = 0; tx < tw; tx++) {
                        long pp = p0 + tx;
                        float *vp = packed ? V + (size_t)(pp / 32) * cin * 32 + (size_t)c * 32 + pp % 32
                                           : V + (size_t)c * P + pp;
                        int o = 2 * tx;
                        float t[4][4];
                        for (int b = 0; b < 4; b++) {
                            t[0][b] = r0[o + b] - r2[o + b];
                            t[1][b] = r1[o + b] + r2[o + b];
                            t[2][b] = r2[o + b] - r1[o + b];
                            t[3][b] = r1[o + b] - r3[o + b];
                        }
                        for (int a = 0; a < 4; a++) {
                            vp[(4 * a + 0) * st] = t[a][0] - t[a][2];
                            vp[(4 * a + 1) * st] = t[a][1] + t[a][2];
                            vp[(4 * a + 2) * st] = t[a][2] - t[a][1];
                            vp[(4 * a + 3) * st] = t[a][1] - t[a][3];
                        }
                    }
                }
            }
    }
    /* the 16 products: M[xi] (cout x P) = U[xi] (cout x cin) x V[xi] (cin x P) */
#pragma omp parallel for schedule(static) if (par)
    for (int xi = 0; xi < 16; xi++)
        if (packed) {
            nn_gemm_out o = {M + (size_t)xi * cout * P, (int)P, 0, NULL, 0};
            nn_gemm_packed(cout, (int)P, cin, U + xi * nn_gemm_apack_n(cout, cin), V + xi * st, &o,
                           0, 1);
        } else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)P, cin, 1.0f,
                    U + (size_t)xi * cout * cin, cin, V + (size_t)xi * cin * P, (int)P, 0.0f,
                    M + (size_t)xi * cout * P, (int)P);
    /* outputs: A^T m A */
#pragma omp parallel for collapse(2) schedule(static) if (par)
    for (int i = 0; i < n; i++)
        for (int o = 0; o < cout; o++) {
            float *yo = y + yper * i + (size_t)o * h * w;
            for (int ty = 0; ty < th; ty++)
                for (int tx = 0; tx < tw; tx++) {
                    long p = (long)i * T + ty * tw + tx;
                    float m[4][4], t[2][4];
                    for (int a = 0; a < 4; a++)
                        for (int b = 0; b < 4; b++) m[a][b] = M[((size_t)(a * 4 + b) * cout + o) * P + p];
                    for (int b = 0; b < 4; b++) {
                        t[0][b] = m[0][b] + m[1][b] + m[2][b];
                        t[1][b] = m[1][b] - m[2][b] - m[3][b];
                    }
                    for (int a = 0; a < 2; a++) {
                        int yy = 2 * ty + a;
                        if (yy >= h) break;
                        float r[2] = {t[a][0] + t[a][1] + t[a][2], t[a][1] - t[a][2] - t[a][3]};
                        for (int b = 0; b < 2; b++) {
                            int xx = 2 * tx + b;
                            if (xx >= w) break;
                            if (accumulate) yo[yy * w + xx] += r[b];
                            else yo[yy * w + xx] = r[b];
                        }
                    }
                }
        }
}
