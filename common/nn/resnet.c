/* resnet.c: the architectures: torchvision's resnet18/34, a small resnet for
 * small images, and fast.ai's head; see nn.h. Parameters are created in
 * torchvision's state_dict order with its names. */
#include <stdio.h>
#include <string.h>

#include "nn.h"

/* torchvision's BasicBlock: conv3x3-bn-relu-conv3x3-bn, plus a 1x1
 * conv-bn shortcut when the shape changes, then add and ReLU. */
static int basic_block(nn_model *m, const char *name, int x, int planes, int stride) {
    char n[96];
    int inplanes = m->vc[x];
    snprintf(n, sizeof n, "%s.conv1", name);
    int y = nn_conv(m, n, x, planes, 3, stride, 1, 0);
    snprintf(n, sizeof n, "%s.bn1", name);
    y = nn_bn(m, n, y, 1);
    snprintf(n, sizeof n, "%s.conv2", name);
    y = nn_conv(m, n, y, planes, 3, 1, 1, 0);
    snprintf(n, sizeof n, "%s.bn2", name);
    y = nn_bn(m, n, y, 0);
    int sc = x;
    if (stride != 1 || inplanes != planes) {
        snprintf(n, sizeof n, "%s.downsample.0", name);
        sc = nn_conv(m, n, x, planes, 1, stride, 0, 0);
        snprintf(n, sizeof n, "%s.downsample.1", name);
        sc = nn_bn(m, n, sc, 0);
    }
    return nn_add(m, y, sc, 1);
}

static ursa_err resnet_layers(nn_model *m, int depth) {
    static const int b18[4] = {2, 2, 2, 2}, b34[4] = {3, 4, 6, 3};
    const int *blocks = depth == 18 ? b18 : depth == 34 ? b34 : NULL;
    if (!blocks) return URSA_ERR_INVALID;
    nn_model_init(m, 3);
    int x = nn_conv(m, "conv1", 0, 64, 7, 2, 3, 0);
    x = nn_bn(m, "bn1", x, 1);
    x = nn_maxpool(m, x, 3, 2, 1);
    for (int l = 0; l < 4; l++)
        for (int j = 0; j < blocks[l]; j++) {
            char name[32];
            snprintf(name, sizeof name, "layer%d.%d", l + 1, j);
            x = basic_block(m, name, x, 64 << l, l > 0 && j == 0 ? 2 : 1);
        }
    return URSA_OK;
}

ursa_err nn_resnet(nn_model *m, int depth, int nclass) {
    ursa_err e = resnet_layers(m, depth);
    if (e != URSA_OK) return e;
    int x = nn_flatten(m, nn_gap(m, m->out));
    nn_linear(m, "fc", x, nclass, 1);
    nn_resnet_groups(m);
    nn_init_weights(m, 0);
    return m->oom ? URSA_ERR_NOMEM : URSA_OK;
}

ursa_err nn_resnet_body(nn_model *m, int depth) {
    ursa_err e = resnet_layers(m, depth);
    if (e != URSA_OK) return e;
    nn_resnet_groups(m);
    nn_init_weights(m, 0);
    return m->oom ? URSA_ERR_NOMEM : URSA_OK;
}

ursa_err nn_small_resnet(nn_model *m, int in_c, int width, int nclass) {
    if (width < 4 || nclass < 1 || in_c < 1) return URSA_ERR_INVALID;
    nn_model_init(m, in_c);
    m->group = 0;
    /* a full-resolution stem, then two downsampling basic blocks: on
     * Fashion-MNIST a third block at full resolution costs 1.45x the time
     * an epoch for no better accuracy in the same ten minutes */
    int x = nn_conv(m, "conv1", 0, width, 3, 1, 1, 0);
    x = nn_bn(m, "bn1", x, 1);
    m->group = 1;
    x = basic_block(m, "layer1.0", x, width * 2, 2);
    x = basic_block(m, "layer2.0", x, width * 4, 2);
    m->group = 2;
    /* fast.ai's concat pool (max and average side by side): 90.60% against
     * the average pool's 90.31% after 3 epochs on Fashion-MNIST (one run
     * each, so within noise; it costs nothing) */
    x = nn_flatten(m, nn_concat(m, nn_gmp(m, x), nn_gap(m, x)));
    nn_linear(m, "fc", x, nclass, 1);
    m->ngroups = 3;
    nn_init_weights(m, 0);
    return m->oom ? URSA_ERR_NOMEM : URSA_OK;
}

void nn_resnet_groups(nn_model *m) {
    for (int i = 0; i < m->nparam; i++) {
        const char *n = m->param[i].name;
        int g = 2;
        if (!strncmp(n, "conv1.", 6) || !strncmp(n, "bn1.", 4) || !strncmp(n, "layer1.", 7) ||
            !strncmp(n, "layer2.", 7))
            g = 0;
        else if (!strncmp(n, "layer3.", 7) || !strncmp(n, "layer4.", 7))
            g = 1;
        m->param[i].group = g;
    }
    m->ngroups = 3;
    m->group = 2;
}

static void head(nn_model *m, int pool, int nclass, int hidden, float p1, float p2) {
    /* the head's group is after every body group */
    int maxg = -1;
    for (int i = 0; i < m->nparam; i++)
        if (m->param[i].group > maxg) maxg = m->param[i].group;
    m->group = maxg + 1;
    int x = m->out;
    if (pool) x = nn_concat(m, nn_gmp(m, x), nn_gap(m, x));
    x = nn_flatten(m, x);
    x = nn_bn(m, "head.2", x, 0);
    x = nn_dropout(m, x, p1);
    x = nn_linear(m, "head.4", x, hidden, 1);
    x = nn_relu(m, x);
    x = nn_bn(m, "head.6", x, 0);
    x = nn_dropout(m, x, p2);
    x = nn_linear(m, "head.8", x, nclass, 1);
    m->ngroups = m->group + 1;
    /* kaiming normal for the head's linear layers, zero biases */
    uint64_t seed = 42;
    for (int i = 0; i < m->nparam; i++) {
        nn_param *p = &m->param[i];
        if (p->group != m->group) continue;
        if (p->kind == NN_P_LIN_W) {
            nn_model one = {0};
            one.param = p;
            one.nparam = 1;
            nn_init_weights(&one, seed++);
        }
    }
}

void nn_add_head(nn_model *m, int nclass, int hidden, float p1, float p2) {
    head(m, 1, nclass, hidden, p1, p2);
}

void nn_add_head_pooled(nn_model *m, int nclass, int hidden, float p1, float p2) {
    head(m, 0, nclass, hidden, p1, p2);
}
