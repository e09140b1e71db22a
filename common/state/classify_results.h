/* classify_results.h: the answers of bulk classification in Redis, the one
 * owner of their keys. ursa-inference's follower stores an answer once per
 * request id (the first writer wins, so a redelivered request gets the same
 * answer), and `ursa classify` waits for and reads them.
 *
 *   ursa:classify:<request id>   STRING the packed ClassifyResult, kept 7 days */
#ifndef URSA_CLASSIFY_RESULTS_H
#define URSA_CLASSIFY_RESULTS_H

#include <stddef.h>

#include "err.h"
#include "rstore.h"

/* The stored answer: a string reply, or a nil reply when there is none. */
ursa_err cresult_get(rstore *r, const char *id, redisReply **rep);
/* Stores an answer unless one is stored already. */
ursa_err cresult_put(rstore *r, const char *id, const void *buf, size_t len);
/* Adds "is it answered?" (an integer reply) to a pipeline. */
ursa_err cresult_batch_exists(rstore_batch *b, const char *id);

#endif
