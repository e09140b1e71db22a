/* sha256.c: SHA-256 through OpenSSL's EVP interface (libcrypto, already
 * in the process through libcurl and librdkafka). It uses the CPU's SHA
 * extensions or vector units: 6x the plain C implementation it replaced
 * on a 200 KB image (docs/benchmarks.md). */
#include "sha256.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static EVP_MD *md_sha256;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;

/* fetched once: an implicit fetch on every digest costs a lock and a lookup */
static void fetch_md(void) { md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL); }

static const EVP_MD *md(void) {
    pthread_once(&md_once, fetch_md);
    if (!md_sha256) { /* no default provider: nothing else in ursa works either */
        fprintf(stderr, "ursa: OpenSSL has no SHA-256 (its default provider did not load)\n");
        abort();
    }
    return md_sha256;
}

void sha256_init(sha256_ctx *c) {
    c->md = EVP_MD_CTX_new();
    if (!c->md || !EVP_DigestInit_ex(c->md, md(), NULL)) {
        fprintf(stderr, "ursa: out of memory for a SHA-256 context\n");
        abort();
    }
}

void sha256_update(sha256_ctx *c, const void *data, size_t n) {
    if (n) EVP_DigestUpdate(c->md, data, n);
}

void sha256_final(sha256_ctx *c, uint8_t out[32]) {
    unsigned int len = 32;
    EVP_DigestFinal_ex(c->md, out, &len);
    EVP_MD_CTX_free(c->md);
    c->md = NULL;
}

void sha256_hex(const void *data, size_t n, char hex[65]) {
    uint8_t d[32];
    unsigned int len = 32;
    if (!EVP_Digest(data, n, d, &len, md(), NULL)) {
        fprintf(stderr, "ursa: SHA-256 failed\n");
        abort();
    }
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[64] = '\0';
}
