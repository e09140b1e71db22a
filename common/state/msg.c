/* msg.c: ids, headers and packing for ursa's messages. */
#include "msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#include <string.h>

#include "kq.h"
#include "util.h"

void msg_new_id(char id[33]) {
    uint8_t r[16];
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t n = getrandom(r + got, sizeof r - got, 0);
        if (n <= 0) { /* no entropy source: fall back, ids stay unique enough */
            for (; got < sizeof r; got++) r[got] = (uint8_t)rand();
            break;
        }
        got += (size_t)n;
    }
    util_hex(r, sizeof r, id);
}

void msg_header_init(Ursa__Header *h, char id_buf[33], const char *dataset,
                     const char *job_id) {
    ursa__header__init(h);
    msg_new_id(id_buf);
    h->schema_version = MSG_SCHEMA_VERSION;
    h->id = id_buf;
    h->ts_ms = util_now_ms();
    if (dataset) h->dataset = (char *)dataset;
    if (job_id) h->job_id = (char *)job_id;
}

ursa_err msg_pack(const ProtobufCMessage *m, void **buf, size_t *len) {
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(n ? n : 1);
    if (!b) return URSA_ERR_NOMEM;
    *len = protobuf_c_message_pack(m, b);
    *buf = b;
    return URSA_OK;
}

ursa_err msg_job_produce(kq_job *job, const char *topic, const char *key,
                         const ProtobufCMessage *m) {
    void *buf;
    size_t len;
    ursa_err err = msg_pack(m, &buf, &len);
    if (err) return err;
    err = kq_job_produce(job, topic, key, strlen(key), buf, len);
    free(buf);
    return err;
}

ursa_err msg_check_header(const Ursa__Header *h, char *errstr, size_t size) {
    if (!h) {
        snprintf(errstr, size, "message has no header");
        return URSA_ERR_INVALID;
    }
    if (h->schema_version < 1 || h->schema_version > MSG_SCHEMA_VERSION) {
        snprintf(errstr, size, "unsupported schema_version %u", h->schema_version);
        return URSA_ERR_UNSUPPORTED;
    }
    return URSA_OK;
}
