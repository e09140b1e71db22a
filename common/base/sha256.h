/* sha256.h: SHA-256 (FIPS 180-4), the content address of every blob:
 * OpenSSL's, behind ursa's own small interface. Nothing here fails or
 * allocates. */
#ifndef URSA_SHA256_H
#define URSA_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/sha.h>

typedef struct {
    SHA256_CTX s;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
void sha256_final(sha256_ctx *c, uint8_t out[32]);
/* One call: the 64-char lowercase hex digest of data into hex[65]. */
void sha256_hex(const void *data, size_t n, char hex[65]);

#endif
