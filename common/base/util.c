/* util.c: clocks, sleeping and file helpers. */
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int64_t util_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void util_sleep_ms(int64_t ms) {
    if (ms <= 0) return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

ursa_err util_mkdirs_mode(const char *dir, unsigned mode) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return URSA_ERR_INVALID;
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) return URSA_ERR_IO;
        *p = '/';
    }
    if (mkdir(path, (mode_t)mode) != 0 && errno != EEXIST) return URSA_ERR_IO;
    return URSA_OK;
}

ursa_err util_mkdirs(const char *dir) { return util_mkdirs_mode(dir, 0755); }

int util_read_int(const char *path) {
    char *d = NULL;
    if (util_read_file(path, 64, &d, NULL) != URSA_OK) return -1;
    int v = atoi(d);
    free(d);
    return v;
}

ursa_err util_read_file(const char *path, size_t max, char **data, size_t *len) {
    *data = NULL;
    if (len) *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? URSA_ERR_NOT_FOUND : URSA_ERR_IO;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return URSA_ERR_IO;
    }
    if ((size_t)st.st_size > max) {
        close(fd);
        return URSA_ERR_TOO_LARGE;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return URSA_ERR_NOMEM;
    }
    for (;;) {
        if (n + 1 == cap) { /* the file grew while we read it */
            if (cap > max) {
                free(buf);
                close(fd);
                return URSA_ERR_TOO_LARGE;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                close(fd);
                return URSA_ERR_NOMEM;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            free(buf);
            close(fd);
            return URSA_ERR_IO;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *data = buf;
    if (len) *len = n;
    return URSA_OK;
}

/* all of data to fd, through send() without SIGPIPE when it is a socket */
static int put_all(int fd, const void *data, size_t len, int sock) {
    const char *p = data;
    while (len) {
        ssize_t w = sock ? send(fd, p, len, MSG_NOSIGNAL) : write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int util_send_all(int fd, const void *data, size_t len) { return put_all(fd, data, len, 1); }

/* The error of a failed write: a full disk is named as such. */
static ursa_err io_err(int e) {
    return e == ENOSPC || e == EDQUOT ? URSA_ERR_NO_SPACE : URSA_ERR_IO;
}

static ursa_err write_file(const char *path, const void *data, size_t len, int durable,
                           mode_t mode) {
    char tmp[4200], dir[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d.%lld", path, (int)getpid(),
                 (long long)util_mono_ms()) >= (int)sizeof tmp)
        return URSA_ERR_INVALID;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) return io_err(errno);
    int bad = put_all(fd, data, len, 0) != 0 || (durable && fsync(fd) != 0);
    int e = errno;
    if (close(fd) != 0 && !bad) { /* tmpfs and NFS may report a full disk here */
        bad = 1;
        e = errno;
    }
    if (bad) {
        unlink(tmp);
        return io_err(e);
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return io_err(e);
    }
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && durable) {
        *slash = '\0';
        int dfd = open(slash == dir ? "/" : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    return URSA_OK;
}

ursa_err util_write_file_atomic(const char *path, const void *data, size_t len) {
    return write_file(path, data, len, 1, 0644);
}

ursa_err util_write_file_private(const char *path, const void *data, size_t len) {
    return write_file(path, data, len, 1, 0600);
}

ursa_err util_write_file_renamed(const char *path, const void *data, size_t len) {
    return write_file(path, data, len, 0, 0644);
}

ursa_err util_random_hex(char *out, size_t bytes) {
    uint8_t b[64];
    if (bytes > sizeof b) return URSA_ERR_INVALID;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, b, bytes) : -1;
    if (fd >= 0) close(fd);
    if (got != (ssize_t)bytes) return URSA_ERR_IO;
    util_hex(b, bytes, out);
    return URSA_OK;
}

const char *util_url_redact(const char *url, char *out, size_t n) {
    const char *auth = strstr(url, "://");
    const char *at = auth ? strchr(auth + 3, '@') : NULL;
    const char *slash = auth ? strchr(auth + 3, '/') : NULL;
    if (!at || (slash && slash < at)) { /* no user info */
        snprintf(out, n, "%s", url);
        return out;
    }
    auth += 3;
    const char *colon = memchr(auth, ':', (size_t)(at - auth));
    int user = (int)((colon ? colon : at) - auth);
    if (!colon) user = 0; /* "password@": all of it is the secret */
    snprintf(out, n, "%.*s%.*s:***%s", (int)(auth - url), url, user, auth, at);
    return out;
}

int64_t util_backoff_ms(int attempt, int64_t base_ms, int64_t max_ms) {
    if (attempt < 1) attempt = 1;
    int64_t d = base_ms;
    for (int i = 1; i < attempt && d < max_ms; i++) d *= 2;
    if (d > max_ms) d = max_ms;
    int64_t jitter = d / 4;
    if (jitter > 0) d += (rand() % (2 * jitter + 1)) - jitter;
    return d < 1 ? 1 : d;
}

void util_hex(const uint8_t *in, size_t n, char *out) {
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int util_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* JSON text is UTF-8: a byte that is not part of a valid character is
 * written as U+FFFD, never as itself. */
void util_json_str(void *file, const char *s) {
    FILE *f = file;
    fputc('"', f);
    while (*s) {
        unsigned char ch = (unsigned char)*s;
        int l = ch < 0x80 ? 1 : util_utf8_len(s);
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f) fprintf(f, "\\u%04x", ch);
        else if (!l) fputs("\\ufffd", f);
        else fwrite(s, 1, (size_t)l, f);
        s += l ? l : 1;
    }
    fputc('"', f);
}

int util_utf8_len(const char *p) {
    const unsigned char *s = (const unsigned char *)p;
    if (s[0] < 0x80) return 1;
    int n = s[0] >= 0xc2 && s[0] <= 0xdf ? 2 : s[0] >= 0xe0 && s[0] <= 0xef ? 3
            : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : 0;
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 0; /* also a NUL: cut short */
    if (n == 3 && ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0))) return 0;
    if (n == 4 && ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))) return 0;
    return n; /* overlong 2-byte forms start with 0xc0 or 0xc1: refused above */
}

/* a control character: C0, DEL, or C1 (U+0080..U+009F, 0xc2 0x80..0x9f) */
static int is_control(const unsigned char *s) {
    return s[0] < 0x20 || s[0] == 0x7f || (s[0] == 0xc2 && s[1] >= 0x80 && s[1] <= 0x9f);
}

int util_text_clean(const char *s) {
    while (*s) {
        int l = util_utf8_len(s);
        if (!l || is_control((const unsigned char *)s)) return 0;
        s += l;
    }
    return 1;
}

const char *util_shown(const char *s, char *buf, size_t n) {
    size_t k = 0;
    while (*s && n) {
        int l = util_utf8_len(s);
        if (!l || is_control((const unsigned char *)s)) {
            if (k + 5 > n) break;
            snprintf(buf + k, 5, "\\x%02x", (unsigned char)*s);
            k += 4, s++;
        } else {
            if (k + (size_t)l + 1 > n) break;
            memcpy(buf + k, s, (size_t)l);
            k += (size_t)l, s += l;
        }
    }
    if (n) buf[k < n ? k : n - 1] = '\0';
    return buf;
}

void util_cell(void *file, const char *s, char sep) {
    FILE *f = file;
    int quote = sep == ',' && strpbrk(s, ",\"\r\n") != NULL;
    if (quote) fputc('"', f);
    if (*s && s[1] && strchr("=+-@\t\r", *s)) fputc('\'', f); /* a lone "-" is no formula */
    while (*s) {
        int l = util_utf8_len(s);
        if (sep != ',' && (!l || is_control((const unsigned char *)s))) { /* one line, shown as is */
            fprintf(f, "\\x%02x", (unsigned char)*s);
            s++;
            continue;
        }
        if (quote && *s == '"') fputc('"', f);
        fputc(*s++, f);
    }
    if (quote) fputc('"', f);
}

int util_csv_field(const char **p, char *out, size_t n) {
    const char *s = *p;
    size_t k = 0;
    int bad = 0;
    if (*s == '"') {
        int closed = 0;
        for (s++; *s; s++) {
            if (*s == '"' && s[1] == '"') s++;
            else if (*s == '"') {
                s++;
                closed = 1;
                break;
            }
            if (k + 1 < n) out[k++] = *s;
        }
        bad = !closed || (*s && *s != ',' && *s != '\n' && *s != '\r');
    }
    for (; *s && *s != ',' && *s != '\n' && *s != '\r'; s++) {
        if (*s == '"') bad = 1; /* a quote inside an unquoted field */
        if (k + 1 < n) out[k++] = *s;
    }
    if (n) out[k] = '\0';
    int end = *s != ',';
    *p = *s == ',' ? s + 1 : s;
    return bad ? -1 : end;
}

void util_cell_unescape(char *s) {
    if (s[0] == '\'' && s[1] && s[2] && strchr("=+-@\t\r", s[1])) memmove(s, s + 1, strlen(s));
}

void util_env_scrub(const char *name) {
    size_t nl = strlen(name);
    for (char **e = environ; e && *e; e++)
        if (!strncmp(*e, name, nl) && (*e)[nl] == '=') explicit_bzero(*e + nl + 1, strlen(*e + nl + 1));
    unsetenv(name);
}

void util_tsv_row(void *file, const char *const *cells, int n) {
    for (int i = 0; i < n; i++) {
        if (i) fputc('\t', (FILE *)file);
        util_cell(file, cells[i] ? cells[i] : "-", '\t');
    }
    fputc('\n', (FILE *)file);
}
