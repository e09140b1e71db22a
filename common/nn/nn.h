/* nn.h: the CNN engine: a model is a small graph of layers with named
 * parameters; an executor runs it forward and backward on a batch.
 *
 * Tensors are float32 NCHW, parameters in PyTorch's layouts (conv weights
 * OIHW, linear weights [out, in]) and named as torchvision names them, so
 * weights move between ursa, PyTorch and ONNX without reshuffling. Every
 * node makes one value; value 0 is the input. Nodes are stored in an order
 * where inputs come first, so forward walks them in order and backward in
 * reverse.
 *
 * Layer semantics follow PyTorch: batch norm uses batch statistics in
 * training (biased variance to normalise, unbiased for the running
 * variance, momentum 0.1) and running statistics in evaluation; max pooling
 * breaks ties by the first maximum; dropout scales kept units by 1/(1-p). */
#ifndef URSA_NN_H
#define URSA_NN_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"

/* Hard bounds on shapes, whatever the budgets below: every product of
 * them the engine computes in int stays far from overflowing. Imports and
 * plans refuse a model beyond them, naming the node. */
#define NN_MAX_CHANNELS (1 << 24) /* a value's channels (a flatten's too) */
#define NN_MAX_SIDE (1 << 16)     /* a value's height or width */
#define NN_MAX_VALUE (1 << 30)    /* a value's floats, one image */
#define NN_ONNX_MAX_NODES 20000   /* nodes of an imported graph (resnet152's export: ~500) */
#define NN_ONNX_MAX_DEPTH 16      /* protobuf message nesting of an ONNX file (a model
                                     needs 7: model, graph, value, type, tensor, shape, dim) */

typedef enum {
    NN_CONV,     /* k x k, stride, pad, optional bias; optional fused ReLU */
    NN_BN,       /* batch norm over channels; optional fused ReLU */
    NN_RELU,
    NN_MAXPOOL,  /* k, stride, pad */
    NN_AVGPOOL,  /* k, stride (no padding) */
    NN_GAP,      /* global average pool: [N,C,H,W] -> [N,C,1,1] */
    NN_GMP,      /* global max pool */
    NN_CONCAT,   /* channels of in[0] then in[1] */
    NN_FLATTEN,  /* [N,C,H,W] -> [N,C*H*W,1,1] */
    NN_LINEAR,   /* y = x W^T + b */
    NN_DROPOUT,  /* p */
    NN_ADD,      /* in[0] + in[1]; optional fused ReLU */
    NN_OP_COUNT
} nn_op;

typedef enum {
    NN_P_CONV_W, NN_P_LIN_W, NN_P_BIAS, NN_P_BN_W, NN_P_BN_B, NN_P_BN_RM, NN_P_BN_RV
} nn_pkind;

typedef struct {
    char name[96];
    nn_pkind kind;
    int ndim, shape[4];
    size_t n;
    float *w;        /* values */
    float *g;        /* gradient (NULL for running statistics) */
    float *m, *v;    /* AdamW moments, made by the optimiser */
    long t;          /* AdamW steps taken */
    int group;       /* layer group, 0 = nearest the input */
    int frozen;      /* no gradient, no update */
} nn_param;

typedef struct {
    nn_op op;
    int in[2], nin, out;
    int k, stride, pad; /* conv, pools */
    int cout;           /* conv, linear */
    int relu;           /* fused ReLU after conv, bn, add */
    float p;            /* dropout */
    float eps, momentum;
    int w, b, rm, rv;   /* parameter indices or -1 */
    int calib;          /* bn: set weight/bias/stats from the first training
                           batch so it starts as the identity (see nn_unfold_bn) */
    char name[96];
} nn_node;

/* What travels with a model so serving preprocesses as training did. */
typedef struct {
    char **classes;
    int nclass;
    int size;          /* input side in pixels */
    char resize[16];   /* "crop": shorter side to size, centre crop */
    float mean[3], std[3];
    char *extra;       /* further "key=value\n" lines (dataset, job, metrics) */
} nn_meta;

typedef struct {
    nn_node *node;
    int nnode, cap_node;
    nn_param *param;
    int nparam, cap_param;
    int *vc;           /* channels of each value (at build time) */
    int nvalue, cap_value;
    int in_c;          /* input channels */
    int out;           /* value holding the logits */
    unsigned long wver; /* bumped whenever weights change after executors exist
                            (the optimiser does); executors cache transforms of them */
    int ngroups;       /* layer groups */
    int group;         /* group new parameters join */
    int oom;           /* an allocation failed while building: unusable */
    nn_meta meta;
} nn_model;

/* ---- limits (limits.c) -------------------------------------------------- */
/* What a model from outside may ask of the process, checked before the
 * memory is taken: nn_onnx_load* refuses a model whose parameters (weights
 * and their gradients) would exceed model_bytes, and nn_exec_new* a plan
 * whose arena (values, scratch, packed weights) would exceed exec_bytes,
 * each naming the node that crosses the line. Process-wide: set once at
 * start-up, before any thread loads a model. 0 is no limit (the default,
 * for the library and its tests). */
typedef struct {
    size_t model_bytes;
    size_t exec_bytes;
} nn_limits;
void nn_limits_set(const nn_limits *l);
nn_limits nn_limits_get(void);
/* nn.max-model-mb and nn.max-exec-mb, for the tables of the programs that
 * load models (ursa predict and bench-model, ursa-inference, ursa-trainer) */
extern const cfg_def nn_cfg_defs[];
/* nn_limits_set from those settings */
void nn_limits_from_cfg(const cfg *c);

/* ---- building ---------------------------------------------------------- */
void nn_model_init(nn_model *m, int in_c);
void nn_model_free(nn_model *m);
/* A deep copy (values, not gradients or moments). */
ursa_err nn_model_copy(const nn_model *src, nn_model *dst);

int nn_conv(nn_model *m, const char *name, int x, int cout, int k, int stride, int pad, int bias);
int nn_bn(nn_model *m, const char *name, int x, int relu);
int nn_relu(nn_model *m, int x);
int nn_maxpool(nn_model *m, int x, int k, int stride, int pad);
int nn_avgpool(nn_model *m, int x, int k, int stride);
int nn_gap(nn_model *m, int x);
int nn_gmp(nn_model *m, int x);
int nn_concat(nn_model *m, int a, int b);
int nn_flatten(nn_model *m, int x);
int nn_linear(nn_model *m, const char *name, int x, int cout, int bias);
int nn_dropout(nn_model *m, int x, float p);
int nn_add(nn_model *m, int a, int b, int relu);
/* Adds a parameter by hand (importers); returns its index. */
int nn_param_add(nn_model *m, const char *name, nn_pkind kind, int ndim, const int *shape);
int nn_param_find(const nn_model *m, const char *name);
size_t nn_param_count(const nn_model *m); /* trainable numbers */

/* "conv" for NN_CONV: the operator's name in profiles and errors. */
const char *nn_op_name(nn_op op);

/* Cuts the graph so value v is the output: nodes after it go. */
void nn_cut(nn_model *m, int v);

/* Fills weights as PyTorch initialises them for training: kaiming normal
 * (fan_out, relu) for convs, kaiming normal for linear layers of a head,
 * BN weight 1 bias 0, running mean 0 var 1. seed makes it repeatable. */
void nn_init_weights(nn_model *m, uint64_t seed);

/* Layer groups: freeze all but the last group (BN stays trainable), or
 * unfreeze everything. */
void nn_freeze(nn_model *m);
void nn_unfreeze(nn_model *m);

/* For inference: folds every BN that follows a conv into the conv's weight
 * and bias, then fuses ReLUs into the node before them (nn_fuse_relu).
 * Makes a new model. */
ursa_err nn_fuse_for_inference(const nn_model *src, nn_model *dst);
/* A ReLU that is the only reader of a conv's, batch norm's or add's output
 * becomes that node's relu flag, in place: the same function and gradients,
 * so it holds for training too, with a pass over the values fewer each way
 * (an imported ONNX graph has its ReLUs apart). */
void nn_fuse_relu(nn_model *m);

/* Imported models with BN folded into conv biases: turns every conv with a
 * bias that is not followed by BN into conv + BN whose parameters are set on
 * the first training batch so the block's output is unchanged (the model
 * can then be trained like one with BN). */
void nn_unfold_bn(nn_model *m);

/* A pretrained classifier (an imported torchvision resnet) as a body for
 * transfer learning: cut before its global pool, BN unfolded where it was
 * folded into the convs, layer groups by name. Add a head next. */
ursa_err nn_body_from(nn_model *m);

/* ---- architectures (resnet.c) ----------------------------------------- */
/* torchvision resnet18/34 with an fc of nclass outputs (1000 for ImageNet). */
ursa_err nn_resnet(nn_model *m, int depth, int nclass);
/* The body of an ImageNet resnet: cut before its global pool. */
ursa_err nn_resnet_body(nn_model *m, int depth);
/* A small resnet for 28..64 px images: a 3x3 stem of w channels at full
 * resolution, basic blocks of 2w and 4w channels each halving the size,
 * concat pool (max and average side by side), fc. */
ursa_err nn_small_resnet(nn_model *m, int in_c, int width, int nclass);
/* fast.ai's head on the model's current output: concat pool, flatten,
 * [BN, dropout 0.25, linear 512, ReLU], [BN, dropout 0.5, linear nclass].
 * Sets groups: the head is the last group. */
void nn_add_head(nn_model *m, int nclass, int hidden, float p1, float p2);
/* The same head without its pool, on an input that is the pool's output
 * (the concat pool's 2C features as C x 1 x 1): the head a frozen body's
 * cached features train. */
void nn_add_head_pooled(nn_model *m, int nclass, int hidden, float p1, float p2);
/* Assigns layer groups to a resnet body by parameter name: stem to layer2,
 * layer3 and layer4, and the rest (head). */
void nn_resnet_groups(nn_model *m);

/* ---- running it (exec.c) ------------------------------------------------ */
typedef struct nn_exec nn_exec;

/* An executor for batches of up to n images of h x w. train makes it keep
 * what backward needs. */
ursa_err nn_exec_new(nn_model *m, int n, int h, int w, int train, nn_exec **out);
/* The same, saying in err why a model cannot be planned: the node whose
 * shape does not fit its input or the bounds above (URSA_ERR_INVALID), or
 * that takes the arena past nn_limits' exec_bytes (URSA_ERR_TOO_LARGE). */
ursa_err nn_exec_new_err(nn_model *m, int n, int h, int w, int train, nn_exec **out, char *err,
                         size_t errlen);
void nn_exec_free(nn_exec *e);
/* Runs forward on x (n x C x h x w, n <= the planned batch); returns the
 * output (n x nclass), owned by the executor. */
const float *nn_forward(nn_exec *e, const float *x, int n);
/* Softmax cross-entropy of the last forward's output against targets:
 * returns the mean loss and runs backward, accumulating parameter
 * gradients (zero them first with nn_zero_grad). NaN for a label outside
 * the classes or when backward runs out of memory. */
float nn_backward_ce(nn_exec *e, const int *targets);
/* The same with label smoothing eps (PyTorch's CrossEntropyLoss
 * label_smoothing, fast.ai's LabelSmoothingCrossEntropy): the target is
 * 1 - eps on the label plus eps / classes on every class. */
float nn_backward_ce_ls(nn_exec *e, const int *targets, float eps);
/* Backward from a given gradient of the output (n x nout); URSA_ERR_NOMEM
 * when a gradient buffer cannot be made (the weight gradients are then
 * partial: do not step). */
ursa_err nn_backward(nn_exec *e, const float *dout);
void nn_zero_grad(nn_model *m);
/* A value's data after forward, and its shape. */
const float *nn_value(nn_exec *e, int v, int *c, int *h, int *w);
/* The gradient of the input after backward, if it was asked for. */
void nn_exec_want_input_grad(nn_exec *e, int on);
const float *nn_input_grad(nn_exec *e);
size_t nn_exec_bytes(const nn_exec *e);
void nn_exec_seed(nn_exec *e, uint64_t seed);
/* Threads: the engine's for the calling thread (OpenMP's, every core by
 * default); setting it there; an executor's own, at most what it was made
 * with (several executors side by side each take a share of the cores). */
int nn_threads(void);
void nn_set_threads(int n);
void nn_exec_set_threads(nn_exec *e, int n);
int nn_out_size(const nn_model *m); /* outputs per image */
/* The instruction-set level the executor runs ("avx2"; kern.h). */
const char *nn_exec_isa(const nn_exec *e);

/* softmax over rows in place */
void nn_softmax(float *x, int n, int c);
float nn_softmax_ce(const float *logits, const int *targets, int n, int c, float *dlogits);
float nn_softmax_ce_ls(const float *logits, const int *targets, int n, int c, float eps,
                       float *dlogits);

/* ---- convolution kernels (conv.c), exposed for tests ------------------ */
void nn_conv_fwd_naive(const float *x, int n, int cin, int h, int w, const float *wt,
                       const float *bias, int cout, int k, int s, int p, float *y);
void nn_conv_bwd_naive(const float *x, int n, int cin, int h, int w, const float *wt,
                       int cout, int k, int s, int p, const float *dy, float *dx, float *dw,
                       float *db);
void nn_im2col(const float *x, int cin, int h, int w, int k, int s, int p, int ho, int wo,
               float *col, int ldc);
void nn_col2im(const float *col, int ldc, int cin, int h, int w, int k, int s, int p, int ho,
               int wo, float *dx);

/* ---- optimiser and schedules (optim.c) -------------------------------- */
typedef struct {
    float beta1, beta2, eps, wd;
    int bn_wd;  /* fast.ai's bn_wd: decay batch norm's parameters and biases too */
    long step;
} nn_adamw;
void nn_adamw_init(nn_adamw *o);           /* 0.9, 0.99, 1e-8, 1e-2, bn_wd 1 */
/* One step; lr per layer group (lrs[group]), beta1 as momentum now. */
ursa_err nn_adamw_step(nn_adamw *o, nn_model *m, const float *lrs, float beta1);

/* fast.ai's one-cycle: lr and momentum at step i of n. */
void nn_one_cycle(float max_lr, int i, int n, float pct, float div, float final_div, float mom_hi,
                  float mom_lo, float *lr, float *mom);
/* Per-group LRs: a range [lo, hi] spread geometrically over g groups (lo ==
 * hi gives the same LR everywhere). */
void nn_group_lrs(float lo, float hi, int g, float *lrs);
/* lr_find: lr of step i of n from start towards end, exponential (step i
 * is i/n of the way, as fast.ai's scheduler steps). */
float nn_lr_find_lr(float start, float end, int i, int n);
/* fast.ai's loss smoothing: exponential moving average, beta 0.98, debiased. */
typedef struct {
    double avg;
    int n;
} nn_smooth;
float nn_smooth_add(nn_smooth *s, float loss);
/* The suggested LR from lr_find's smoothed losses: steepest descent
 * (np.gradient's argmin), skipping the first 10 and last 5 points. */
float nn_lr_find_suggest(const float *lrs, const float *smoothed, int n);

/* ---- checkpoints (checkpoint.c) ---------------------------------------- */
/* Weights, AdamW moments and step counts, plus ulen bytes of the caller's
 * (epoch, step, RNG), written atomically (temporary file, fsync, rename).
 * URSA_ERR_NO_SPACE when the disk is full, URSA_ERR_IO for other failures. */
ursa_err nn_checkpoint_save(const nn_model *m, const void *user, uint32_t ulen, const char *path,
                            char *err, size_t errlen);
/* Into a model of the same architecture; a file of another model, or a
 * damaged one, is refused (URSA_ERR_CORRUPT) and the model left as it was. */
ursa_err nn_checkpoint_load(nn_model *m, void *user, uint32_t ulen, const char *path, char *err,
                            size_t errlen);
/* The same in memory (for an object store): encode into a new buffer the
 * caller frees; decode refuses another model's or damaged bytes with
 * URSA_ERR_CORRUPT, leaving the model as it was. */
ursa_err nn_checkpoint_encode(const nn_model *m, const void *user, uint32_t ulen, uint8_t **out,
                              size_t *outlen);
ursa_err nn_checkpoint_decode(nn_model *m, void *user, uint32_t ulen, const uint8_t *buf,
                              size_t len);

/* ---- ONNX (onnx.c) ---------------------------------------------------- */
ursa_err nn_onnx_save(const nn_model *m, const char *path, char *err, size_t errlen);
ursa_err nn_onnx_load(const char *path, nn_model *m, char *err, size_t errlen);
ursa_err nn_onnx_load_mem(const uint8_t *buf, size_t len, nn_model *m, char *err, size_t errlen);
ursa_err nn_onnx_save_mem(const nn_model *m, uint8_t **buf, size_t *len, char *err,
                          size_t errlen);

void nn_meta_free(nn_meta *mt);
void nn_meta_default(nn_meta *mt); /* 224, crop, ImageNet mean/std */
ursa_err nn_meta_copy(const nn_meta *src, nn_meta *dst);
/* label of class i ("i" when the model has no names); buf >= 16 */
const char *nn_class_name(const nn_meta *mt, int i, char *buf, size_t len);

#endif
