/* registry.c: the model registry's keys; see registry.h. */
#include "registry.h"

#include <stdio.h>
#include <string.h>

#include "util.h"

static void model_key(char *out, size_t n, const char *id) { snprintf(out, n, "ursa:model:%s", id); }

ursa_err registry_publish(rstore *r, const char *id, const char *dataset,
                          const char *const *kv, const void *onnx, size_t onnx_len) {
    char key[200];
    model_key(key, sizeof key, id);
    long long now = (long long)util_now_ms();
    rstore_batch *b = rstore_batch_new();
    if (!b) return URSA_ERR_NOMEM;
    rstore_batch_add(b, "HSETNX %s created_ms %lld", key, now);
    for (; kv && kv[0] && kv[1]; kv += 2) rstore_batch_add(b, "HSET %s %s %s", key, kv[0], kv[1]);
    if (onnx) rstore_batch_add(b, "SET %s:onnx %b EX 604800", key, onnx, onnx_len);
    rstore_batch_add(b, "ZADD ursa:models NX %lld %s", now, id);
    rstore_batch_add(b, "ZADD ursa:ds:%s:models NX %lld %s", dataset, now, id);
    redisReply **rep = NULL;
    ursa_err e = rstore_batch_exec(r, b, &rep);
    for (size_t i = 0; !e && i < rstore_batch_len(b); i++)
        if (rep[i]->type == REDIS_REPLY_ERROR) e = URSA_ERR_REDIS;
    if (rep) rstore_replies_free(rep, rstore_batch_len(b));
    rstore_batch_destroy(b);
    return e;
}

ursa_err registry_list(rstore *r, const char *dataset, int newest, long limit,
                       redisReply **ids) {
    char key[160];
    if (*dataset) snprintf(key, sizeof key, "ursa:ds:%s:models", dataset);
    else snprintf(key, sizeof key, "ursa:models");
    return rstore_cmd(r, ids, "%s %s 0 %ld", newest ? "ZREVRANGE" : "ZRANGE", key,
                      limit > 0 ? limit - 1 : -1L);
}

ursa_err registry_fields(rstore *r, const char *id, const char *const *fields,
                         redisReply **rep) {
    const char *argv[34];
    char key[200];
    model_key(key, sizeof key, id);
    int n = 0;
    argv[n++] = "HMGET";
    argv[n++] = key;
    for (; *fields && n < 34; fields++) argv[n++] = *fields;
    return rstore_cmdargv(r, rep, n, argv, NULL);
}

ursa_err registry_get(rstore *r, const char *id, redisReply **rep) {
    char key[200];
    model_key(key, sizeof key, id);
    return rstore_hgetall(r, rep, key);
}

ursa_err registry_onnx(rstore *r, const char *id, redisReply **rep) {
    ursa_err e = rstore_cmd(r, rep, "GET ursa:model:%s:onnx", id);
    if (e) return e;
    if ((*rep)->type != REDIS_REPLY_STRING) {
        freeReplyObject(*rep);
        *rep = NULL;
        return URSA_ERR_NOT_FOUND;
    }
    return URSA_OK;
}

ursa_err registry_delete(rstore *r, const char *id) {
    char key[200];
    model_key(key, sizeof key, id);
    redisReply *rep = NULL;
    ursa_err e = rstore_cmd(r, &rep, "HGET %s dataset", key);
    if (e) return e;
    char ds[160] = "";
    if (rep->type == REDIS_REPLY_STRING) snprintf(ds, sizeof ds, "%s", rep->str);
    int known = rep->type == REDIS_REPLY_STRING;
    freeReplyObject(rep);
    /* the lists first: a reader never meets a listed model without fields
     * for long, and each step can be done again */
    if (*ds && (e = rstore_cmd(r, NULL, "ZREM ursa:ds:%s:models %s", ds, id))) return e;
    if ((e = rstore_cmd(r, NULL, "ZREM ursa:models %s", id))) return e;
    if ((e = rstore_cmd(r, NULL, "DEL %s:onnx", key))) return e;
    if ((e = rstore_cmd(r, NULL, "DEL %s", key))) return e;
    return known ? URSA_OK : URSA_ERR_NOT_FOUND;
}

ursa_err registry_delete_dataset(rstore *r, const char *dataset, size_t *deleted) {
    *deleted = 0;
    redisReply *ids = NULL;
    ursa_err e = registry_list(r, dataset, 0, 0, &ids);
    for (size_t i = 0; !e && ids->type == REDIS_REPLY_ARRAY && i < ids->elements; i++) {
        ursa_err d = registry_delete(r, ids->element[i]->str);
        if (d && d != URSA_ERR_NOT_FOUND) e = d;
        else *deleted += !d;
        /* a model whose fields are gone is not in its dataset's list for it */
        if (d == URSA_ERR_NOT_FOUND)
            e = rstore_cmd(r, NULL, "ZREM ursa:models %s", ids->element[i]->str);
    }
    if (ids) freeReplyObject(ids);
    if (!e) e = rstore_cmd(r, NULL, "UNLINK ursa:ds:%s:models", dataset);
    return e;
}
