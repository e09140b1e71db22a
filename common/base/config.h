/* config.h: layered settings, one typed table per service.
 *
 * A setting such as "redis.url" is, in rising priority:
 *   its default < a config file line `redis.url = ...` (--config FILE or
 *   $URSA_CONFIG) < the environment $URSA_REDIS_URL < the flag --redis.url.
 * The environment name is the setting's name upper-cased with '.' and '-'
 * turned into '_'. Settings under a registered pass-through prefix ("kafka.")
 * that are not in the table are kept as raw name/value pairs for the library
 * behind them (librdkafka); in the environment they are spelled
 * URSA_KAFKA_SOCKET_TIMEOUT_MS for kafka.socket.timeout.ms. */
#ifndef URSA_CONFIG_H
#define URSA_CONFIG_H

#include <stdio.h>

#include "err.h"

typedef enum { CFG_STR, CFG_INT, CFG_BOOL, CFG_DOUBLE } cfg_type;

typedef struct {
    const char *name; /* NULL ends a table */
    cfg_type type;
    const char *def;  /* default as text; NULL for none */
    double min, max;  /* bounds for INT and DOUBLE; ignored when min > max */
    const char *help;
} cfg_def;

typedef struct cfg cfg;

/* Settings every daemon has: log.level, state-dir. */
extern const cfg_def cfg_defs_base[];
/* kafka.bootstrap, kafka.partitions, kq.* (retries, dead-lettering). */
extern const cfg_def cfg_defs_kafka[];
/* redis.url, redis.timeout-ms. */
extern const cfg_def cfg_defs_redis[];

/* Creates a config from a NULL-terminated list of tables, holding defaults.
 * The tables are borrowed and must outlive the config. The prefix (may be
 * NULL) names pass-through settings, e.g. "kafka.". Returns NULL on ENOMEM. */
cfg *cfg_new(const cfg_def *const *tables, const char *passthrough_prefix);
void cfg_destroy(cfg *c);

/* The program's own prefix ("inference." for ursa-inference): on the command
 * line its settings may drop it (--port for --inference.port); a setting
 * whose whole name matches wins. Copied; NULL clears it. */
ursa_err cfg_set_own_prefix(cfg *c, const char *prefix);

/* Applies file, environment and flags from argv[1..]. Flags are --name VALUE,
 * --name=VALUE, or --name alone for a bool. Parsing stops at the first
 * argument that is not a flag, or after "--"; its index goes to *argi.
 * "--help"/"-h" sets *want_help. Errors name the offending setting. */
ursa_err cfg_load(cfg *c, int argc, char **argv, int *argi, int *want_help,
                  char *errstr, size_t errstr_size);

/* Sets one value from text, checked against its type and bounds. */
ursa_err cfg_set(cfg *c, const char *name, const char *value, char *errstr,
                 size_t errstr_size);
/* Reads name = value lines; '#' starts a comment. */
ursa_err cfg_load_file(cfg *c, const char *path, char *errstr,
                       size_t errstr_size);

/* 1 if name is a bool setting (a flag without a value). */
int cfg_is_bool(const cfg *c, const char *name);

/* Getters return the current value; names must be in the table (a wrong name
 * is a programming error and returns ""/0). Strings are borrowed. */
const char *cfg_str(const cfg *c, const char *name);
long long cfg_int(const cfg *c, const char *name);
int cfg_bool(const cfg *c, const char *name);
double cfg_double(const cfg *c, const char *name);
/* 1 when the setting came from a file, the environment or a flag, not its
 * default. */
int cfg_given(const cfg *c, const char *name);

/* Pass-through settings, in the order they were set. Strings borrowed. */
size_t cfg_passthrough_count(const cfg *c);
void cfg_passthrough_get(const cfg *c, size_t i, const char **name,
                         const char **value);

/* Prints every setting with its type, environment name, default and help. */
void cfg_print_help(const cfg *c, FILE *out);

#endif
