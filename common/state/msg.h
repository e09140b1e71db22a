/* msg.h: helpers for the protobuf messages of proto/ursa.proto. */
#ifndef URSA_MSG_H
#define URSA_MSG_H

#include <stddef.h>

#include "err.h"
#include "ursa.pb-c.h"

#define MSG_SCHEMA_VERSION 1

/* Fills a new random id: 32 lowercase hex chars and a NUL. */
void msg_new_id(char id[33]);

/* Initialises h with the schema version, a new id (written to id_buf, which
 * must outlive h), the time now and the given dataset/job (borrowed, may be
 * NULL). */
void msg_header_init(Ursa__Header *h, char id_buf[33], const char *dataset,
                     const char *job_id);

/* Packs any message into a new buffer the caller frees. */
ursa_err msg_pack(const ProtobufCMessage *m, void **buf, size_t *len);

/* Packs m and produces it as part of job's effects (kq_job_produce), keyed
 * by the NUL-terminated key. */
struct kq_job;
ursa_err msg_job_produce(struct kq_job *job, const char *topic, const char *key,
                         const ProtobufCMessage *m);

/* Checks a decoded header: present and of a schema version we read. */
ursa_err msg_check_header(const Ursa__Header *h, char *errstr, size_t size);

#endif
