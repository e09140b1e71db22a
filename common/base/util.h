/* util.h: small helpers every module needs: clocks, sleeping, files. */
#ifndef URSA_UTIL_H
#define URSA_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

int64_t util_now_ms(void);      /* wall clock, ms since the epoch */
int64_t util_mono_ms(void);     /* monotonic clock, ms */
void util_sleep_ms(int64_t ms); /* sleeps; returns early on a signal */

/* Creates dir and its parents (mode 0755); existing dirs are fine. */
ursa_err util_mkdirs(const char *dir);
/* The number a small file holds (a port, a pid, a count), or -1 when it
 * cannot be read. */
int util_read_int(const char *path);
/* The same, the last directory made with mode (0700: the state dir, blob
 * stores and checkpoints hold data others on the host must not read); an
 * existing one is left as it is. */
ursa_err util_mkdirs_mode(const char *dir, unsigned mode);

/* Reads a whole file into a new NUL-terminated buffer the caller frees.
 * Refuses files above max bytes with URSA_ERR_TOO_LARGE. */
ursa_err util_read_file(const char *path, size_t max, char **data, size_t *len);

/* Writes data to path atomically: a temp file in the same directory, fsync,
 * rename, fsync of the directory. Readers see the old file or the new one. */
ursa_err util_write_file_atomic(const char *path, const void *data, size_t len);

/* The same rename-into-place without the fsyncs: readers still see the old
 * file or the new one, and a killed process loses nothing (the page cache
 * keeps it), but a machine crash may, until the file is fsynced
 * (blob_store_sync() does it for the blobs a store wrote so). */
ursa_err util_write_file_renamed(const char *path, const void *data, size_t len);

/* The same, for a secret (a password): mode 0600 from its creation. */
ursa_err util_write_file_private(const char *path, const void *data, size_t len);

/* bytes random bytes from the kernel as 2*bytes hex digits and a NUL. */
ursa_err util_random_hex(char *out, size_t bytes);

/* A URL as it may be shown or logged: a password in it (scheme://user:
 * password@host) becomes "***". Returns out. */
const char *util_url_redact(const char *url, char *out, size_t n);

/* Exponential backoff: base * 2^(attempt-1), capped, with +-25% jitter. */
int64_t util_backoff_ms(int attempt, int64_t base_ms, int64_t max_ms);

/* Lowercase hex of n bytes into out (2n+1 bytes). */
void util_hex(const uint8_t *in, size_t n, char *out);

/* Writes s as a JSON string (quoted, escaped) to f, a FILE *. */
void util_json_str(void *f, const char *s);

/* Returns a TCP port on 127.0.0.1 that was free a moment ago, or -1. */
int util_free_port(void);

/* Sends all of data on a socket, retrying short sends and EINTR, without
 * SIGPIPE: 0, or -1 when the peer is gone or the socket failed. */
int util_send_all(int fd, const void *data, size_t len);

/* Removes a secret from the environment: its value's bytes are zeroed
 * where they are (for the initial environment, the memory
 * /proc/PID/environ shows, which unsetenv leaves as it was), then the
 * variable is unset. Copy the value first; pointers to it see zeros. */
void util_env_scrub(const char *name);

/* ---- text from outside (labels, URLs, file contents) ---- */

/* The length of the UTF-8 character at s (1..4), or 0 when the bytes
 * there are not one (overlong, a surrogate, past U+10FFFF, cut short). */
int util_utf8_len(const char *s);
/* 1 when s is valid UTF-8 without control characters (C0, DEL, C1). */
int util_text_clean(const char *s);
/* s made safe to show on a terminal, into buf (n bytes, cut there):
 * control characters and bytes that are not UTF-8 as \xNN. Returns buf. */
const char *util_shown(const char *s, char *buf, size_t n);
/* One cell of a CSV (sep ',') or TSV (sep '\t') file a spreadsheet may
 * open: a cell of two characters or more starting with =, +, -, @, tab or
 * CR gets a leading ' (OWASP's advice against CSV injection); with sep ',' a cell holding a comma,
 * quote or line end is quoted as RFC 4180 says, and with '\t' control
 * characters and bytes that are not UTF-8 are written as \xNN (a TSV line
 * stays one line, and a terminal shows it as text). util_cell_unescape
 * undoes the ' in place when it reads one back. */
void util_cell(void *f, const char *s, char sep);
/* util_cell's TSV cells of a row, tab-separated, and a newline. */
void util_tsv_row(void *f, const char *const *cells, int n);
void util_cell_unescape(char *s);
/* Reads one CSV field (RFC 4180: a quoted field may hold commas, and ""
 * is a quote) from *p into out (cut at n - 1 bytes), and moves *p past it
 * and its comma. Returns 0 when more fields follow on the line, 1 at the
 * line's end, -1 for a field the RFC does not allow (a quote left open,
 * or text after a closing quote). util_cell writes what this reads. */
int util_csv_field(const char **p, char *out, size_t n);

#endif
