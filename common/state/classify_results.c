/* classify_results.c: see classify_results.h. */
#include "classify_results.h"

ursa_err cresult_get(rstore *r, const char *id, redisReply **rep) {
    return rstore_cmd(r, rep, "GET ursa:classify:%s", id);
}

ursa_err cresult_put(rstore *r, const char *id, const void *buf, size_t len) {
    return rstore_cmd(r, NULL, "SET ursa:classify:%s %b NX EX 604800", id, buf, len);
}

ursa_err cresult_batch_exists(rstore_batch *b, const char *id) {
    return rstore_batch_add(b, "EXISTS ursa:classify:%s", id);
}
