/* err.h: the one error enum every ursa module returns.
 *
 * Library code never exits or prints on error: it returns one of these, and
 * optionally fills a caller's `char *errstr, size_t errstr_size` with detail.
 * The classes matter to the delivery rules: URSA_ERR_UNAVAILABLE means a
 * dependency (Redis, Kafka, a disk) is down and the same work should be tried
 * again later (URSA_ERR_NO_SPACE is that, for a full disk); URSA_ERR_TRANSIENT means this piece of work failed in a way
 * that may pass on retry; everything else is permanent for that input. */
#ifndef URSA_ERR_H
#define URSA_ERR_H

typedef enum {
    URSA_OK = 0,
    URSA_ERR_NOMEM,       /* allocation failed */
    URSA_ERR_INVALID,     /* bad argument or bad input data */
    URSA_ERR_CONFIG,      /* bad configuration value */
    URSA_ERR_IO,          /* file system error */
    URSA_ERR_NOT_FOUND,   /* no such key, file, blob */
    URSA_ERR_EXISTS,      /* already there */
    URSA_ERR_TIMEOUT,     /* gave up waiting */
    URSA_ERR_UNAVAILABLE, /* a dependency is down; retry later */
    URSA_ERR_TRANSIENT,   /* this work failed, may pass on retry */
    URSA_ERR_PERMANENT,   /* this work can never succeed */
    URSA_ERR_CORRUPT,     /* data failed an integrity check */
    URSA_ERR_TOO_LARGE,   /* over a size limit */
    URSA_ERR_UNSUPPORTED, /* valid but not handled */
    URSA_ERR_KAFKA,       /* Kafka client error (detail in errstr) */
    URSA_ERR_REDIS,       /* Redis replied with an error */
    URSA_ERR_SHUTDOWN,    /* stopped because shutdown was requested */
    URSA_ERR_NO_SPACE,    /* a disk is full or a quota reached (ENOSPC, EDQUOT);
                             retry once space comes back */
    URSA_ERR__COUNT
} ursa_err;

/* Returns a static, human-readable name for err ("unavailable"). */
const char *ursa_err2str(ursa_err err);

/* True for errors worth retrying: UNAVAILABLE, NO_SPACE, TRANSIENT, TIMEOUT. */
int ursa_err_retriable(ursa_err err);

#endif
