/* plan.h: an executor's insides, shared by plan.c (shapes, and one arena
 * for every buffer the plan can size), conv.c (convolutions) and exec.c
 * (the forward and backward drivers). Not a public header: see nn.h. */
#ifndef URSA_NN_PLAN_H
#define URSA_NN_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "kern.h"
#include "nn.h"

typedef struct {
    int c, h, w;
    size_t per; /* floats per image */
    float *d;   /* data (in inference, shared with values whose lives do not overlap) */
    float *g;   /* gradient while alive (from the pool) */
    int ng;     /* gradient needed */
    int buf;    /* the buffer holding d */
} nn_val;

/* One thread's scratch; floats of each as nn_scratch_n says. */
typedef struct {
    float *col;  /* im2col rows, a forward product's B panels, an input gradient's columns */
    float *ph;   /* stride-2 inputs split by parity (gemm.h) */
    float *apk;  /* a backward product's packed A: dY's rows (weight gradients) */
    float *bpk;  /* its packed B: im2col transposed (weight gradients) or dY (input gradients) */
    float *dwt;  /* training: this thread's weight and bias gradient sums */
    float *wv;   /* Winograd: the transformed inputs V */
    float *wm;   /* Winograd: the products M (dy's transforms in a weight gradient) */
    float *wgm;  /* Winograd: a weight gradient's transformed sum */
    float *scr;  /* max-pool rows; Winograd's padded copies */
} nn_scratch;

typedef struct {
    size_t col, ph, apk, bpk, dwt, wv, wm, wgm, scr;
} nn_scratch_n;

/* What the plan decided for a node. */
typedef struct {
    int wino;             /* conv: Winograd F(2x2,3x3) (else im2col into panels) */
    float *pk;            /* inference, conv: its weights packed for its path */
    unsigned long pkver;  /* model->wver + 1 when pk was made (0: not yet) */
    float *bn_mean, *bn_istd; /* training, bn: the batch's statistics */
    uint8_t *mask;        /* training, dropout: the units kept */
} nn_nplan;

typedef struct {
    float *p;
    size_t n; /* floats */
    int busy;
} nn_buf;

struct nn_exec {
    nn_model *m;
    const nn_kern *kt; /* the instruction-set table, fixed at creation */
    int n, h, w, train;
    int nb;            /* images in the batch at hand */
    int nth;           /* threads (at most the scratch was made for) */
    int nth_max;
    nn_val *v;
    nn_nplan *np;      /* a plan a node */
    nn_buf *bufs;      /* the values' buffers */
    int nbufs;
    nn_scratch_n sn;   /* floats of each scratch, a thread */
    nn_scratch *ts;    /* nth_max of them, each the same layout tstride floats after the last */
    size_t tstride;
    /* training: the weights of the node at hand, packed at each use for
     * the forward product (pkf), the input gradient's (pkd: W^T, or the
     * flipped kernel's Winograd transform) */
    float *pkf, *pkd;
    size_t pk_n;       /* floats of each */
    float *arena;      /* all of the above */
    size_t arena_n;
    nn_buf *gpool;     /* gradients of values, made as backward needs them */
    int ngpool, cap_gpool;
    int want_in_grad;
    uint64_t rng;
    size_t bytes;
    float *dout;
    int chunk_min;     /* columns a conv product should have at least */
    int ph_val;        /* the value whose parity planes ts[0].ph holds whole, or -1 */
    int prof;          /* URSA_NN_PROFILE: time per operator, printed at free */
    double *pnode;     /* URSA_NN_PROFILE=nodes: per node, forward then backward */
    double ptime[2][NN_OP_COUNT];
    long pcalls;
};

/* conv.c */
/* images per product (several share one when the output is small), and
 * per Winograd pass */
int nn_conv_chunk(const nn_exec *e, int hwo);
int nn_wino_chunk(const nn_exec *e, int tiles);
/* whether the plan runs node nd (a conv with output y) through Winograd */
int nn_conv_wino_ok(const nn_exec *e, const nn_node *nd, const nn_val *y);
/* floats of packed weights node nd needs for its path, forward or (dx)
 * for its input gradient */
size_t nn_conv_pack_n(const nn_exec *e, const nn_node *nd, int dx);
void nn_conv_forward(nn_exec *e, const nn_node *nd, const nn_val *x, nn_val *y);
/* dy may be changed (it is the gradient's own buffer); dx, when not NULL, is
 * added to, or written when fresh */
void nn_conv_backward(nn_exec *e, const nn_node *nd, const nn_val *x, const nn_val *y, float *dy,
                      float *dx, int fresh);

#endif
