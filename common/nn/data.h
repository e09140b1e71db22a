/* data.h: images to tensors: the validation transform (shorter side to the
 * model's size, centre crop, normalise), fast.ai's get_transforms()
 * augmentation for training, and a loader that prepares batches on its own
 * thread so the math never waits for decoding. */
#ifndef URSA_NN_DATA_H
#define URSA_NN_DATA_H

#include <pthread.h>
#include <stdint.h>

#include "image.h"
#include "nn.h"

/* get_transforms(): flip p 0.5; rotate +-max_rotate, zoom 1..max_zoom, warp
 * +-max_warp, each with p_affine; brightness and contrast (max_lighting)
 * with p_lighting; pad: random shift by up to pad pixels (reflection). */
typedef struct {
    int flip;
    float max_rotate, max_zoom, max_warp, max_lighting, p_affine, p_lighting;
    int pad;
} nn_aug;

nn_aug nn_aug_fastai(void); /* fast.ai v1's defaults */
nn_aug nn_aug_none(void);

/* Decodes image bytes as every stage that feeds a model does (ursa predict,
 * the trainer, the inference server), so they all see the same pixels:
 * JPEG and WebP at the smallest power-of-two fraction still at least the
 * model's size. o: the limits (max pixels, scans, cancel; NULL: defaults);
 * its shrink_to is the model's size whatever it says. */
ursa_err nn_decode_image(const uint8_t *data, size_t len, const nn_meta *mt,
                         const img_decode_opts *o, img_rgb *out,
                         img_reject *rej);

/* Class indices by falling probability (ties: the lower index first), the
 * order every answer lists its predictions in. */
void nn_rank(const float *prob, int c, int *order);

/* The validation transform into out (C x size x size), C = in_c (1: gray). */
void nn_preprocess(const img_rgb *im, const nn_meta *mt, int in_c, float *out);
/* The training transform: random crop and augmentation. */
void nn_augment(const img_rgb *im, const nn_meta *mt, int in_c, const nn_aug *a, uint64_t *rng,
                float *out);

/* Test-time augmentation, fast.ai's TTA made deterministic: a prediction
 * averages the class probabilities of views of the image. NN_TTA_FLIP adds
 * its mirror image, NN_TTA_SHIFT its copies moved by max(1, size/28)
 * pixels left, right, up and down (edges reflected, as the training's
 * shifts); both together also mirror the shifted copies. */
enum { NN_TTA_OFF = 0, NN_TTA_FLIP = 1, NN_TTA_SHIFT = 2 };
#define NN_TTA_MAX_VIEWS 10
/* "off", "flip", "shift" or "flip+shift" (also "flip,shift") into *mode;
 * -1 when s is none of them. */
int nn_tta_parse(const char *s, unsigned *mode);
const char *nn_tta_name(unsigned mode);
/* Views a prediction takes under mode: 1, 2, 5 or 10. */
int nn_tta_views(unsigned mode);
/* The views of one preprocessed image x (c x h x w) into out, one after
 * the other (the first is x itself). */
void nn_tta_expand(const float *x, int c, int h, int w, unsigned mode, float *out);
/* View v (0 .. nn_tta_views(mode) - 1, in nn_tta_expand's order) of x. */
void nn_tta_view(const float *x, int c, int h, int w, unsigned mode, int v, float *out);
/* p holds n x k rows of c probabilities (k views an image, in order): their
 * means, n rows, are written to the start of p. */
void nn_tta_mean(float *p, int n, int k, int c);

/* Where a loader gets image i: fills *im (the loader frees it) and returns
 * 0, or -1 when the image cannot be read (it is skipped and counted). */
typedef int (*nn_image_fn)(void *ctx, int i, img_rgb *im);

typedef struct nn_loader nn_loader;

/* Batches of bs over items idx[0..n) (labels lab[]), shuffled each epoch
 * when train, augmented with *aug when given. */
ursa_err nn_loader_new(nn_image_fn fn, void *ctx, const int *idx, const int *lab, int n, int bs,
                       int train, const nn_aug *aug, const nn_meta *mt, int in_c, uint64_t seed,
                       nn_loader **out);
/* A loader of ready tensors (features of a frozen body, say): fn writes
 * item i's dim floats and returns 0, or -1 to skip it. Batches are
 * bs x dim x 1 x 1, shuffled each epoch when train; no augmentation. */
typedef int (*nn_tensor_fn)(void *ctx, int i, float *out);
ursa_err nn_loader_new_tensors(nn_tensor_fn fn, void *ctx, const int *idx, const int *lab, int n,
                               int bs, int train, int dim, uint64_t seed, nn_loader **out);
/* The next batch of this epoch: x (bs x C x s x s) and targets; returns the
 * batch size, 0 at the end of the epoch (the next call starts another). */
int nn_loader_next(nn_loader *l, const float **x, const int **y);
int nn_loader_batches(const nn_loader *l);
long nn_loader_failed(const nn_loader *l);
void nn_loader_free(nn_loader *l);

#endif
