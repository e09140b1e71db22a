/* optim.c: AdamW, one-cycle, discriminative LRs and lr_find, as fast.ai v1
 * and PyTorch define them; see nn.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn.h"

void nn_adamw_init(nn_adamw *o) {
    o->beta1 = 0.9f;
    o->beta2 = 0.99f;
    o->eps = 1e-8f;
    o->wd = 1e-2f;
    o->bn_wd = 1;
    o->step = 0;
}

/* PyTorch's AdamW: decay the weights by lr*wd, then the Adam step with bias
 * correction from each parameter's own step count. */
ursa_err nn_adamw_step(nn_adamw *o, nn_model *m, const float *lrs, float beta1) {
    o->step++;
    m->wver++;
    for (int i = 0; i < m->nparam; i++) {
        nn_param *p = &m->param[i];
        if (!p->g || p->frozen) continue;
        if (!p->m || !p->v) {
            free(p->m);
            free(p->v);
            p->m = calloc(p->n, sizeof(float));
            p->v = calloc(p->n, sizeof(float));
            if (!p->m || !p->v) {
                free(p->m), free(p->v);
                p->m = p->v = NULL;
                return URSA_ERR_NOMEM;
            }
        }
        p->t++;
        float lr = lrs[p->group < m->ngroups ? p->group : m->ngroups - 1];
        float b2 = o->beta2, decay =
            !o->bn_wd && (p->kind == NN_P_BIAS || p->kind == NN_P_BN_W || p->kind == NN_P_BN_B)
                ? 1.0f
                : 1.0f - lr * o->wd;
        double bc1 = 1.0 - pow(beta1, (double)p->t), bc2 = 1.0 - pow(b2, (double)p->t);
        float step = (float)(lr / bc1), bc2s = (float)sqrt(bc2), eps = o->eps;
        float *w = p->w, *g = p->g, *mm = p->m, *vv = p->v;
#pragma omp parallel for schedule(static) if (p->n > 65536)
        for (size_t j = 0; j < p->n; j++) {
            w[j] *= decay;
            mm[j] = beta1 * mm[j] + (1 - beta1) * g[j];
            vv[j] = b2 * vv[j] + (1 - b2) * g[j] * g[j];
            w[j] -= step * mm[j] / (sqrtf(vv[j]) / bc2s + eps);
        }
    }
    return URSA_OK;
}

static float anneal_cos(float start, float end, float pct) {
    return end + (start - end) / 2.0f * (cosf((float)M_PI * pct) + 1.0f);
}

void nn_one_cycle(float max_lr, int i, int n, float pct, float div, float final_div, float mom_hi,
                  float mom_lo, float *lr, float *mom) {
    int a1 = (int)(n * pct);
    int a2 = n - a1;
    if (i < a1) {
        float t = (float)i / (float)a1;
        *lr = anneal_cos(max_lr / div, max_lr, t);
        *mom = anneal_cos(mom_hi, mom_lo, t);
    } else {
        float t = a2 > 0 ? (float)(i - a1) / (float)a2 : 1.0f;
        *lr = anneal_cos(max_lr, max_lr / final_div, t);
        *mom = anneal_cos(mom_lo, mom_hi, t);
    }
}

void nn_group_lrs(float lo, float hi, int g, float *lrs) {
    if (g == 1 || lo == hi) {
        for (int i = 0; i < g; i++) lrs[i] = hi;
        return;
    }
    double step = pow((double)hi / lo, 1.0 / (g - 1));
    for (int i = 0; i < g; i++) lrs[i] = (float)(lo * pow(step, i));
}

/* fast.ai v1's Scheduler: step i of n is at i/n of the way (never at end) */
float nn_lr_find_lr(float start, float end, int i, int n) {
    return (float)(start * pow((double)end / start, n > 0 ? (double)i / n : 0));
}

float nn_smooth_add(nn_smooth *s, float loss) {
    const double beta = 0.98;
    s->n++;
    s->avg = beta * s->avg + (1 - beta) * loss;
    return (float)(s->avg / (1 - pow(beta, s->n)));
}

float nn_lr_find_suggest(const float *lrs, const float *sm, int n) {
    int lo = 10, hi = n - 5; /* skip_start, skip_end */
    if (hi - lo < 2) {
        lo = 0;
        hi = n;
    }
    if (hi - lo < 2) return n ? lrs[0] : 0;
    int best = lo;
    float bg = INFINITY;
    for (int i = lo; i < hi; i++) {
        float g;
        if (i == lo) g = sm[i + 1] - sm[i];
        else if (i == hi - 1) g = sm[i] - sm[i - 1];
        else g = (sm[i + 1] - sm[i - 1]) / 2;
        if (g < bg) {
            bg = g;
            best = i;
        }
    }
    return lrs[best];
}
