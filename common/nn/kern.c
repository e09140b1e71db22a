/* kern.c: which instruction-set table the engine runs; see kern.h. */
#include "kern.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const isa_names[NN_ISA_COUNT] = {"generic", "avx2", "avx512"};

const char *nn_isa_name(nn_isa isa) {
    return isa >= 0 && isa < NN_ISA_COUNT ? isa_names[isa] : "?";
}

const nn_kern *nn_kern_of(nn_isa isa) {
    switch (isa) {
    case NN_ISA_GENERIC: return &nn_kern_generic;
#if defined(__x86_64__)
    case NN_ISA_AVX2: return &nn_kern_avx2;
    case NN_ISA_AVX512: return &nn_kern_avx512;
#endif
    default: return NULL;
    }
}

nn_isa nn_isa_best(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return NN_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return NN_ISA_AVX2;
#endif
    return NN_ISA_GENERIC;
}

/* the table in use; NULL until the first nn_kern_get or nn_isa_init */
static _Atomic(const nn_kern *) cur;

ursa_err nn_isa_set(nn_isa isa) {
    if (isa < 0 || isa > nn_isa_best() || !nn_kern_of(isa)) return URSA_ERR_INVALID;
    atomic_store(&cur, nn_kern_of(isa));
    return URSA_OK;
}

ursa_err nn_isa_init(char *err, size_t errlen) {
    nn_isa best = nn_isa_best();
    const char *want = getenv("URSA_NN_ISA");
    atomic_store(&cur, nn_kern_of(best));
    if (!want || !*want) return URSA_OK;
    for (int i = 0; i < NN_ISA_COUNT; i++)
        if (!strcmp(want, isa_names[i])) {
            if (nn_isa_set((nn_isa)i) == URSA_OK) return URSA_OK;
            if (err)
                snprintf(err, errlen,
                         "URSA_NN_ISA=%s: this CPU runs at most %s (see grep -c avx512f "
                         "/proc/cpuinfo)",
                         want, nn_isa_name(best));
            return URSA_ERR_INVALID;
        }
    if (err)
        snprintf(err, errlen, "URSA_NN_ISA=%s: not a level; use avx512, avx2 or generic", want);
    return URSA_ERR_INVALID;
}

const nn_kern *nn_kern_get(void) {
    const nn_kern *k = atomic_load(&cur);
    if (!k) { /* nobody chose: URSA_NN_ISA if it is valid, else the best */
        nn_isa_init(NULL, 0);
        k = atomic_load(&cur);
    }
    return k;
}
