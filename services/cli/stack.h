/* stack.h: the embedded stack of `ursa up/down/env`: a private
 * redis-server, ursa-broker and whichever daemons are installed beside the
 * `ursa` binary, each a detached process with a pid file and a log under the
 * state dir (see common/daemon/statedir.h for the layout); and what `ursa status`
 * reads of it. */
#ifndef URSA_CLI_STACK_H
#define URSA_CLI_STACK_H

#include <librdkafka/rdkafka.h>
#include <limits.h>

#include "config.h"

/* Settings of the stack commands (redis-server binary, timeouts). */
extern const cfg_def stack_defs[];
/* `ursa up`'s own: the ports of ursa-inference and ursa-console. */
extern const cfg_def stack_up_defs[];

/* Each returns the process exit code and prints for a person. */
int stack_up(const cfg *c, int argc, char **argv);
int stack_down(const cfg *c, int argc, char **argv);
int stack_env(const cfg *c, int argc, char **argv);
/* `ursa broker CMD...`: a fault-drill command to the embedded broker. */
int stack_broker(const cfg *c, int argc, char **argv);

/* The daemons `ursa up` runs when their binary exists beside `ursa`, in
 * pipeline order; NULL-terminated. */
extern const char *const stack_daemons[];

/* One process of the embedded stack, as `ursa status` shows it. */
typedef struct {
    const char *name; /* "redis", "broker", or one of stack_daemons */
    int pid;          /* 0: not running */
    const char *state; /* "running", "down", "external" (redis.url) or "not built" */
    int ok;           /* redis and the broker: answering */
    char health[256]; /* redis and the broker: what they answered; "" for the rest */
} stack_proc;

typedef struct {
    char root[PATH_MAX];  /* the state dir, absolute */
    stack_proc procs[8];  /* redis, broker, then stack_daemons */
    int n;
} stack_view;

/* 1 when the state dir holds an embedded stack (its Redis port or broker
 * address), looking without creating anything. */
int stack_exists(const cfg *c);
/* Looks at the stack's processes (a redis.url Redis is "external" and not
 * asked here). -1 after printing why the state dir cannot be read. */
int stack_inspect(const cfg *c, stack_view *v);

/* A quiet librdkafka handle for metadata and offset queries (group may be
 * NULL); the caller destroys it. NULL when librdkafka refuses. */
rd_kafka_t *stack_kafka_handle(const char *bootstrap, rd_kafka_type_t type, const char *group);
/* The number of topics the cluster reports, or -1 when it does not answer
 * within timeout_ms. */
int stack_broker_topics(const char *bootstrap, int timeout_ms);

#endif
