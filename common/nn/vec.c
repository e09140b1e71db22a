/* vec.c: batch norm's reductions, vectorised; see vec.h. */
#include "vec.h"

#include "gemm.h"

static float sum_c(const float *x, size_t n) {
    float a[8] = {0};
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) a[l] += x[j + l];
    float s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    for (; j < n; j++) s += x[j];
    return s;
}

static float sqdev_c(const float *x, size_t n, float mu) {
    float a[8] = {0};
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) {
            float d = x[j + l] - mu;
            a[l] += d * d;
        }
    float s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    for (; j < n; j++) s += (x[j] - mu) * (x[j] - mu);
    return s;
}

static void sum2_c(const float *d, const float *x, size_t n, float mu, float *sd, float *sdx) {
    float a[8] = {0}, b[8] = {0};
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) {
            a[l] += d[j + l];
            b[l] += d[j + l] * (x[j + l] - mu);
        }
    float s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    float t = ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7]));
    for (; j < n; j++) s += d[j], t += d[j] * (x[j] - mu);
    *sd += s;
    *sdx += t;
}

#if defined(__x86_64__)
#include <immintrin.h>
#define TGT __attribute__((target("avx512f")))

static inline __mmask16 tail(size_t left) { return (__mmask16)((1u << left) - 1); }

TGT static float sum_v(const float *x, size_t n) {
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
    size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        a = _mm512_add_ps(a, _mm512_loadu_ps(x + j));
        b = _mm512_add_ps(b, _mm512_loadu_ps(x + j + 16));
    }
    for (; j < n; j += 16) {
        __mmask16 k = n - j >= 16 ? (__mmask16)0xffff : tail(n - j);
        a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(k, x + j));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a, b));
}

TGT static float sqdev_v(const float *x, size_t n, float mu) {
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps(), m = _mm512_set1_ps(mu);
    size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(x + j), m);
        __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(x + j + 16), m);
        a = _mm512_fmadd_ps(d0, d0, a);
        b = _mm512_fmadd_ps(d1, d1, b);
    }
    for (; j < n; j += 16) {
        __mmask16 k = n - j >= 16 ? (__mmask16)0xffff : tail(n - j);
        __m512 d = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + j), m);
        a = _mm512_fmadd_ps(d, d, a);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a, b));
}

TGT static void sum2_v(const float *d, const float *x, size_t n, float mu, float *sd, float *sdx) {
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps(), m = _mm512_set1_ps(mu);
    size_t j = 0;
    for (; j < n; j += 16) {
        __mmask16 k = n - j >= 16 ? (__mmask16)0xffff : tail(n - j);
        __m512 g = _mm512_maskz_loadu_ps(k, d + j);
        a = _mm512_add_ps(a, g);
        b = _mm512_fmadd_ps(g, _mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), m), b);
    }
    *sd += _mm512_reduce_add_ps(a);
    *sdx += _mm512_reduce_add_ps(b);
}

float nn_vsum(const float *x, size_t n) { return nn_gemm_avail() ? sum_v(x, n) : sum_c(x, n); }
float nn_vsqdev(const float *x, size_t n, float mu) {
    return nn_gemm_avail() ? sqdev_v(x, n, mu) : sqdev_c(x, n, mu);
}
void nn_vsum2(const float *d, const float *x, size_t n, float mu, float *sd, float *sdx) {
    if (nn_gemm_avail()) sum2_v(d, x, n, mu, sd, sdx);
    else sum2_c(d, x, n, mu, sd, sdx);
}

#else

float nn_vsum(const float *x, size_t n) { return sum_c(x, n); }
float nn_vsqdev(const float *x, size_t n, float mu) { return sqdev_c(x, n, mu); }
void nn_vsum2(const float *d, const float *x, size_t n, float mu, float *sd, float *sdx) {
    sum2_c(d, x, n, mu, sd, sdx);
}

#endif
