/* log.c: the key=value line logger. One write(2) per line so lines from
 * threads and processes sharing a log file never interleave. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int ulog_level = ULOG_INFO;
static int ulog_fd = STDERR_FILENO;

/* The log file, when there is one (ulog_open_file). */
static struct {
    char path[PATH_MAX];
    long long max_bytes;
    int keep;
    atomic_llong size; /* about: what this process wrote, from the size at open */
    pthread_mutex_t mu;
} lf = {.mu = PTHREAD_MUTEX_INITIALIZER};

void ulog_set_fd(int fd) { ulog_fd = fd; }

/* path opened for appending onto stdout and stderr both, so whatever the
 * process writes there (a sanitizer's report, a crash) goes with the lines. */
static int open_onto_std(const char *path, long long *size) {
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    struct stat st;
    *size = fstat(fd, &st) == 0 ? (long long)st.st_size : 0;
    if (dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    close(fd);
    return 0;
}

int ulog_open_file(const char *path, long long max_bytes, int keep) {
    if (!path || !*path || strlen(path) + 8 >= sizeof lf.path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    long long size = 0;
    if (open_onto_std(path, &size)) return -1;
    snprintf(lf.path, sizeof lf.path, "%s", path);
    lf.max_bytes = max_bytes;
    lf.keep = keep < 1 ? 1 : keep;
    atomic_store(&lf.size, size);
    ulog_fd = STDERR_FILENO;
    return 0;
}

/* The file past its size: path.keep is dropped, path.N becomes path.N+1,
 * path becomes path.1, and a new path takes stdout and stderr. One thread
 * at a time; a line written meanwhile lands in one file or the other. */
static void rotate(void) {
    pthread_mutex_lock(&lf.mu);
    if (atomic_load(&lf.size) >= lf.max_bytes) {
        char from[PATH_MAX + 16], to[PATH_MAX + 16];
        for (int i = lf.keep - 1; i >= 1; i--) {
            snprintf(from, sizeof from, "%s.%d", lf.path, i);
            snprintf(to, sizeof to, "%s.%d", lf.path, i + 1);
            rename(from, to); /* missing ones are fine */
        }
        snprintf(to, sizeof to, "%s.1", lf.path);
        long long size = 0;
        /* a file moved or removed by someone else is no reason to go on
         * writing to it: a new one is opened either way */
        int moved = rename(lf.path, to) == 0 || errno == ENOENT;
        if (moved && open_onto_std(lf.path, &size) == 0)
            atomic_store(&lf.size, size);
        else /* try again after half the size more: not at every line */
            atomic_store(&lf.size, lf.max_bytes / 2);
    }
    pthread_mutex_unlock(&lf.mu);
}
static const char *ulog_svc = "ursa";
static const char *level_names[] = {"error", "warn", "info", "debug"};

void ulog_init(const char *svc) {
    if (svc) ulog_svc = svc;
}

int ulog_level_parse(const char *s) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0) return i;
    return -1;
}

void ulog_write(ulog_level_t lvl, const char *fmt, ...) {
    char line[4096];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s svc=%s pid=%d ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000),
                     level_names[lvl], ulog_svc, (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(ulog_fd, line, len);
    if (w > 0 && lf.max_bytes > 0 && atomic_fetch_add(&lf.size, w) + w >= lf.max_bytes) rotate();
}

const char *ulog_quote(char *buf, size_t size, const char *s) {
    size_t o = 0;
    if (size < 3) {
        if (size) buf[0] = '\0';
        return buf;
    }
    buf[o++] = '"';
    for (; s && *s && o + 3 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f) continue;
        if (c == '"' || c == '\\') buf[o++] = '\\';
        buf[o++] = (char)c;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}
