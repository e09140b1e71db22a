/* log.h: one line per event, key=value, to stderr (a daemon's to stdout, or
 * to its log file).
 *
 *   ULOG_INFO("event=started port=%d", port);
 *   -> ts=2026-11-27T00:00:00.123Z level=info svc=broker pid=42 event=started port=4242
 *
 * The macros test the level before evaluating their arguments. Values that may
 * hold spaces or quotes go through ulog_quote() so a line stays parseable. */
#ifndef URSA_LOG_H
#define URSA_LOG_H

#include <stddef.h>

typedef enum { ULOG_ERROR = 0, ULOG_WARN, ULOG_INFO, ULOG_DEBUG } ulog_level_t;

extern int ulog_level; /* events above this level are skipped */

/* Sets the service name printed as svc=. The string is borrowed. */
void ulog_init(const char *svc);
/* Parses "error", "warn", "info" or "debug"; returns -1 if unknown. */
int ulog_level_parse(const char *s);

/* Lines go to fd from now on (STDERR_FILENO by default; the daemons use
 * STDOUT_FILENO, as containers and journald expect). */
void ulog_set_fd(int fd);
/* Lines go to path, appended (made 0600), and stdout and stderr with them
 * (a crash's or a sanitizer's last words land there too). Once the file
 * reaches max_bytes (0: never) it is rotated: path.N becomes path.N+1 up
 * to path.keep, path becomes path.1, and a new path starts (also when
 * someone else moved or removed it). One process a file: two would rotate
 * each other's. 0, or -1 with errno. */
int ulog_open_file(const char *path, long long max_bytes, int keep);

void ulog_write(ulog_level_t lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Writes s into buf as a double-quoted value with \" and \\ escaped and
 * control characters dropped; returns buf. Truncates to fit. */
const char *ulog_quote(char *buf, size_t size, const char *s);

#define ULOG(lvl, ...)                                                         \
    do {                                                                       \
        if ((int)(lvl) <= ulog_level) ulog_write((lvl), __VA_ARGS__);          \
    } while (0)
#define ULOG_ERROR(...) ULOG(ULOG_ERROR, __VA_ARGS__)
#define ULOG_WARN(...) ULOG(ULOG_WARN, __VA_ARGS__)
#define ULOG_INFO(...) ULOG(ULOG_INFO, __VA_ARGS__)
#define ULOG_DEBUG(...) ULOG(ULOG_DEBUG, __VA_ARGS__)

#endif
