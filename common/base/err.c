/* err.c: names for the error enum. */
#include "err.h"

static const char *names[URSA_ERR__COUNT] = {
    [URSA_OK] = "ok",
    [URSA_ERR_NOMEM] = "out of memory",
    [URSA_ERR_INVALID] = "invalid",
    [URSA_ERR_CONFIG] = "bad configuration",
    [URSA_ERR_IO] = "i/o error",
    [URSA_ERR_NOT_FOUND] = "not found",
    [URSA_ERR_EXISTS] = "already exists",
    [URSA_ERR_TIMEOUT] = "timed out",
    [URSA_ERR_UNAVAILABLE] = "unavailable",
    [URSA_ERR_TRANSIENT] = "transient failure",
    [URSA_ERR_PERMANENT] = "permanent failure",
    [URSA_ERR_CORRUPT] = "corrupt",
    [URSA_ERR_TOO_LARGE] = "too large",
    [URSA_ERR_UNSUPPORTED] = "unsupported",
    [URSA_ERR_KAFKA] = "kafka error",
    [URSA_ERR_REDIS] = "redis error",
    [URSA_ERR_SHUTDOWN] = "shutting down",
    [URSA_ERR_NO_SPACE] = "no space left (disk full or quota reached)",
};

const char *ursa_err2str(ursa_err err) {
    if ((unsigned)err >= URSA_ERR__COUNT || !names[err])
        return "unknown error";
    return names[err];
}

int ursa_err_retriable(ursa_err err) {
    return err == URSA_ERR_UNAVAILABLE || err == URSA_ERR_NO_SPACE || err == URSA_ERR_TRANSIENT ||
           err == URSA_ERR_TIMEOUT;
}
