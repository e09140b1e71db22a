/* fuzz_decode: libFuzzer target for the image decoders (JPEG, PNG, GIF,
 * WebP) behind img_decode(), the cost estimate, and the whole img_verify().
 * Any crash, leak or undefined behaviour under ASan is a bug; rejections
 * are fine.
 *   ops/fuzz.sh            builds it with clang and runs the seed corpus
 */
#include <stdint.h>
#include <stdlib.h>

#include "image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    img_rgb im;
    img_reject rej;
    /* a small pixel budget keeps each run fast and tests the bomb check */
    img_decode_opts d = img_decode_opts_default();
    d.max_pixels = 4u << 20;
    if (img_decode(data, size, &d, &im, &rej) == URSA_OK) img_free(&im);
    /* scaled, under the budget its own estimate gives (as the server does) */
    d.shrink_to = 64;
    d.max_cost = img_decode_cost(data, size, &d);
    if (img_decode(data, size, &d, &im, &rej) == URSA_OK) img_free(&im);
    img_opts o = img_opts_default();
    o.max_pixels = 4u << 20;
    o.max_size = 64;
    o.min_side = 1;
    uint8_t *jpeg = NULL;
    size_t len;
    int w, h;
    if (img_verify(data, size, &o, &jpeg, &len, &w, &h, &rej) == URSA_OK) free(jpeg);
    return 0;
}
