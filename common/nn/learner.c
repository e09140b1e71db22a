/* learner.c: fit_one_cycle, validation and lr_find; see learner.h. */
#include "learner.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

ursa_err nn_learner_init(nn_learner *L, nn_model *m, nn_loader *train, nn_loader *valid, int bs) {
    if (bs < 1) return URSA_ERR_INVALID;
    memset(L, 0, sizeof *L);
    L->m = m;
    L->train = train;
    L->valid = valid;
    L->bs = bs;
    L->h = L->w = m->meta.size;
    nn_adamw_init(&L->opt);
    ursa_err e = nn_exec_new(m, bs, L->h, L->w, 1, &L->tr);
    if (e == URSA_OK) e = nn_exec_new(m, bs, L->h, L->w, 0, &L->ev);
    int h = 0, w = 0;
    if (e == URSA_OK) nn_value(L->tr, m->out, NULL, &h, &w);
    if (e == URSA_OK && h * w != 1) e = URSA_ERR_INVALID; /* not one score per class */
    if (e != URSA_OK) nn_learner_free(L);
    return e;
}

static void ema_free(nn_learner *L) {
    for (int i = 0; L->ema_w && i < L->m->nparam; i++) free(L->ema_w[i]);
    free(L->ema_w);
    L->ema_w = NULL;
    L->ema_n = 0;
}

/* The average moves towards the weights after each step, at a decay that
 * grows to L->ema over the first steps (TensorFlow's num_updates), so the
 * random start is soon forgotten. */
static ursa_err ema_update(nn_learner *L) {
    nn_model *m = L->m;
    if (!L->ema_w) {
        L->ema_w = calloc((size_t)m->nparam, sizeof(float *));
        if (!L->ema_w) return URSA_ERR_NOMEM;
        for (int i = 0; i < m->nparam; i++) {
            L->ema_w[i] = malloc(sizeof(float) * m->param[i].n);
            if (!L->ema_w[i]) {
                ema_free(L);
                return URSA_ERR_NOMEM;
            }
            memcpy(L->ema_w[i], m->param[i].w, sizeof(float) * m->param[i].n);
        }
    }
    L->ema_n++;
    float d = (1.0f + L->ema_n) / (10.0f + L->ema_n);
    if (d > L->ema) d = L->ema;
    for (int i = 0; i < m->nparam; i++) {
        float *a = L->ema_w[i];
        const float *w = m->param[i].w;
        for (size_t j = 0; j < m->param[i].n; j++) a[j] = d * a[j] + (1 - d) * w[j];
    }
    return URSA_OK;
}

/* Exchanges the model's weights with their average. */
static void ema_swap(nn_learner *L) {
    nn_model *m = L->m;
    if (!L->ema_w) return;
    for (int i = 0; i < m->nparam; i++) {
        float *a = L->ema_w[i], *w = m->param[i].w;
        for (size_t j = 0; j < m->param[i].n; j++) {
            float t = a[j];
            a[j] = w[j];
            w[j] = t;
        }
    }
    m->wver++;
}

void nn_learner_free(nn_learner *L) {
    if (L->m) ema_free(L);
    free(L->tta_x);
    L->tta_x = NULL;
    nn_exec_free(L->tr);
    nn_exec_free(L->ev);
    L->tr = L->ev = NULL;
}

/* The views' mean probabilities of a batch x of n images into p (n x c):
 * each view of every image goes through the model as a batch of n. */
static ursa_err tta_probs(nn_learner *L, const float *x, int n, int c, float *p) {
    int k = nn_tta_views(L->tta), in_c = L->m->in_c;
    size_t per = (size_t)in_c * L->h * L->w;
    if (!L->tta_x && !(L->tta_x = malloc(sizeof(float) * per * (size_t)L->bs)))
        return URSA_ERR_NOMEM;
    memset(p, 0, sizeof(float) * (size_t)n * c);
    for (int v = 0; v < k; v++) {
        for (int i = 0; i < n; i++)
            nn_tta_view(x + per * i, in_c, L->h, L->w, L->tta, v, L->tta_x + per * i);
        float *o = (float *)nn_forward(L->ev, L->tta_x, n); /* the exec's own, ours to change */
        nn_softmax(o, n, c);
        for (size_t j = 0; j < (size_t)n * c; j++) p[j] += o[j] / (float)k;
    }
    return URSA_OK;
}

ursa_err nn_validate(nn_learner *L, float *loss, float *err) {
    const float *x;
    const int *y;
    int n, c = nn_out_size(L->m);
    double tl = 0;
    long wrong = 0, total = 0;
    float *p = NULL;
    if (L->tta && !(p = malloc(sizeof(float) * (size_t)L->bs * c))) return URSA_ERR_NOMEM;
    while ((n = nn_loader_next(L->valid, &x, &y)) > 0) {
        const float *o;
        if (p) { /* the loss of the mean probabilities; argmax of them */
            ursa_err e = tta_probs(L, x, n, c, p);
            if (e != URSA_OK) {
                while (nn_loader_next(L->valid, &x, &y) > 0) {} /* keep the loader in step */
                free(p);
                return e;
            }
            for (int i = 0; i < n; i++) tl -= log(fmax(p[(size_t)i * c + y[i]], 1e-30));
            o = p;
        } else {
            o = nn_forward(L->ev, x, n);
            tl += (double)nn_softmax_ce(o, y, n, c, NULL) * n;
        }
        for (int i = 0; i < n; i++) {
            int best = 0;
            for (int j = 1; j < c; j++)
                if (o[(size_t)i * c + j] > o[(size_t)i * c + best]) best = j;
            wrong += best != y[i];
        }
        total += n;
    }
    free(p);
    if (!total) return URSA_ERR_INVALID;
    *loss = (float)(tl / total);
    *err = (float)wrong / total;
    return URSA_OK;
}

static void table_head(FILE *f) {
    if (f) fprintf(f, "%-6s %-11s %-11s %-11s %s\n", "epoch", "train_loss", "valid_loss",
                   "error_rate", "time"), fflush(f);
}

ursa_err nn_fit_one_cycle(nn_learner *L, int epochs, float lr_lo, float lr_hi) {
    return nn_fit_one_cycle_from(L, epochs, 0, lr_lo, lr_hi);
}

ursa_err nn_fit_one_cycle_from(nn_learner *L, int epochs, int from, float lr_lo, float lr_hi) {
    nn_model *m = L->m;
    int g = m->ngroups, nb = nn_loader_batches(L->train), total = epochs * nb, it = from * nb;
    if (from < 0 || from > epochs) return URSA_ERR_INVALID;
    float maxl[16], lrs[16];
    if (g > 16) return URSA_ERR_INVALID;
    nn_group_lrs(lr_lo, lr_hi, g, maxl);
    nn_smooth sm = {0};
    float smooth = 0;
    ema_free(L); /* an average is of one fit: none left from one cut short */
    table_head(L->table);
    for (int ep = from; ep < epochs; ep++) {
        double t0 = now_s();
        const float *x;
        const int *y;
        int n;
        while ((n = nn_loader_next(L->train, &x, &y)) > 0) {
            if (L->stop && *L->stop) {
                /* drain the epoch so the loader stays in step */
                while (nn_loader_next(L->train, &x, &y) > 0) {}
                return URSA_ERR_SHUTDOWN;
            }
            float lr1, mom;
            for (int k = 0; k < g; k++)
                nn_one_cycle(maxl[k], it < total ? it : total - 1, total, 0.3f, 25.0f, 25e4f, 0.95f,
                             0.85f, &lrs[k], &mom);
            lr1 = lrs[g - 1];
            nn_zero_grad(m);
            nn_forward(L->tr, x, n);
            float loss = nn_backward_ce_ls(L->tr, y, L->label_smoothing);
            if (!isfinite(loss)) return URSA_ERR_INVALID;
            ursa_err e = nn_adamw_step(&L->opt, m, lrs, mom);
            if (e == URSA_OK && L->ema > 0) e = ema_update(L);
            if (e != URSA_OK) return e;
            smooth = nn_smooth_add(&sm, loss);
            if (L->on_batch) L->on_batch(L->ctx, L->epochs_done, it % nb, nb, smooth, lr1);
            it++;
        }
        nn_epoch_row row = {L->epochs_done, smooth, 0, 0, 0};
        ema_swap(L);
        ursa_err e = nn_validate(L, &row.valid_loss, &row.error_rate);
        if (ep + 1 < epochs) ema_swap(L); /* the last epoch leaves the average in */
        if (e != URSA_OK) return e;
        row.seconds = now_s() - t0;
        if (L->table) {
            int s = (int)(row.seconds + 0.5);
            fprintf(L->table, "%-6d %-11.6f %-11.6f %-11.6f %02d:%02d\n", row.epoch,
                    row.train_loss, row.valid_loss, row.error_rate, s / 60, s % 60);
            fflush(L->table);
        }
        if (L->on_epoch) L->on_epoch(L->ctx, &row);
        L->epochs_done++;
    }
    ema_free(L);
    return URSA_OK;
}

ursa_err nn_lr_find(nn_learner *L, float *lrs, float *losses, int *np, float *suggestion) {
    nn_model *m = L->m, save;
    ursa_err e = nn_model_copy(m, &save);
    if (e != URSA_OK) return e;
    const int steps = 100;
    nn_smooth sm = {0};
    float best = INFINITY, glr[16];
    int n = 0, g = m->ngroups;
    if (g > 16) {
        nn_model_free(&save);
        return URSA_ERR_INVALID;
    }
    nn_adamw opt;
    nn_adamw_init(&opt);
    const float *x;
    const int *y;
    int b;
    int empty = 0; /* epochs in a row without a batch: nothing decodes */
    while (n < steps && empty < 2) {
        if (L->stop && *L->stop) break;
        b = nn_loader_next(L->train, &x, &y);
        if (b == 0) { /* the next epoch */
            empty++;
            continue;
        }
        empty = 0;
        float lr = nn_lr_find_lr(1e-7f, 10.0f, n, steps);
        for (int k = 0; k < g; k++) glr[k] = lr;
        nn_zero_grad(m);
        nn_forward(L->tr, x, b);
        float loss = nn_backward_ce(L->tr, y);
        float s = nn_smooth_add(&sm, loss);
        lrs[n] = lr;
        losses[n] = s;
        n++;
        if (n == 1 || s < best) best = s;
        if (!isfinite(s) || s > 4 * best) break;
        if ((e = nn_adamw_step(&opt, m, glr, 0.9f)) != URSA_OK) break;
    }
    /* finish the epoch so the next fit starts on a fresh one */
    if (!empty)
        while (nn_loader_next(L->train, &x, &y) > 0) {}
    /* restore the weights (and BN statistics) */
    for (int i = 0; i < m->nparam; i++) {
        memcpy(m->param[i].w, save.param[i].w, sizeof(float) * m->param[i].n);
        free(m->param[i].m);
        free(m->param[i].v);
        m->param[i].m = m->param[i].v = NULL;
        m->param[i].t = 0;
    }
    for (int i = 0; i < m->nnode; i++) m->node[i].calib = save.node[i].calib; /* nn_unfold_bn's */
    m->wver++;
    nn_model_free(&save);
    *np = n;
    *suggestion = nn_lr_find_suggest(lrs, losses, n);
    if (e == URSA_OK && n == 0) e = URSA_ERR_INVALID; /* no batch could be made */
    return e;
}
