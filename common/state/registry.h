/* registry.h: the model registry in Redis, its one owner. ursa-trainer
 * publishes, ursa-inference serves, the CLI lists and shows.
 *
 *   ursa:models              ZSET created_ms -> model id (every dataset)
 *   ursa:ds:<ds>:models      ZSET created_ms -> model id (one dataset)
 *   ursa:model:<id>          HASH dataset, job, arch, blob (the ONNX file),
 *                            classes (tab-separated, in order), size,
 *                            error_rate, valid_loss, n_train, n_valid,
 *                            interp (blob of the validation set's
 *                            predictions, see jobs.h), created_ms, bytes
 *   ursa:model:<id>:onnx     STRING the model file, cached for a week for
 *                            servers that do not share the blob store
 *
 * Publishing is idempotent: a second publish of the same model changes
 * nothing that readers rely on (created_ms and the lists keep the first).
 * Each command touches one key, so the registry works on Redis Cluster. */
#ifndef URSA_REGISTRY_H
#define URSA_REGISTRY_H

#include <stddef.h>

#include "err.h"
#include "rstore.h"

/* Publishes model id of dataset: HSET of the NULL-terminated name/value
 * pairs kv, the ONNX copy when onnx is not NULL, and the lists. */
ursa_err registry_publish(rstore *r, const char *id, const char *dataset,
                          const char *const *kv, const void *onnx, size_t onnx_len);

/* Model ids, oldest first, or newest first when newest; of one dataset or
 * of all (dataset ""); at most limit (0: all). *ids is an array reply. */
ursa_err registry_list(rstore *r, const char *dataset, int newest, long limit,
                       redisReply **ids);

/* HMGET of the NULL-terminated fields (at most 32) of a model: an array
 * reply with one element a field (nil when unset). */
ursa_err registry_fields(rstore *r, const char *id, const char *const *fields,
                         redisReply **rep);

/* Every field of a model; URSA_ERR_NOT_FOUND when it is not registered. */
ursa_err registry_get(rstore *r, const char *id, redisReply **rep);

/* The cached ONNX copy (a string reply), URSA_ERR_NOT_FOUND without one. */
ursa_err registry_onnx(rstore *r, const char *id, redisReply **rep);
/* Deletes a model from the registry: its fields, its cached ONNX and its
 * place in the lists (ursa:models, its dataset's). URSA_ERR_NOT_FOUND for
 * an unknown model. Its blob stays until it is collected; a server
 * already serving it goes on until it loads another. */
ursa_err registry_delete(rstore *r, const char *id);
/* Deletes every model of a dataset and the dataset's list of them (a
 * model listed whose fields are gone included); *deleted counts those
 * that were registered. */
ursa_err registry_delete_dataset(rstore *r, const char *dataset, size_t *deleted);

#endif
