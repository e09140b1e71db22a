/* multipart.c: the part named "file" of a multipart/form-data body (what a
 * browser's form or FormData sends), found in place; a body with two is
 * refused rather than half answered. */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "server.h"

/* 1 when a part's headers (hdr, hl bytes) name it "file": a
 * Content-Disposition whose name parameter is exactly "file" (not
 * filename="file"). */
static int names_file(const char *hdr, size_t hl) {
    const char *end = hdr + hl;
    for (const char *line = hdr; line < end;) {
        const char *le = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (!le) le = end;
        size_t ll = (size_t)(le - line);
        if (ll > 20 && !strncasecmp(line, "Content-Disposition:", 20)) {
            for (const char *p = line + 20; p + 11 <= le; p++) {
                /* a parameter starts after ';' and spaces */
                if (*p != ';') continue;
                const char *q = p + 1;
                while (q < le && (*q == ' ' || *q == '\t')) q++;
                if ((size_t)(le - q) >= 11 && !strncasecmp(q, "name=\"file\"", 11)) return 1;
                if ((size_t)(le - q) >= 9 && !strncasecmp(q, "name=file", 9) &&
                    (q + 9 == le || q[9] == ';' || q[9] == ' '))
                    return 1;
            }
        }
        line = le + 2;
    }
    return 0;
}

int multipart_file(const char *ctype, const char *body, size_t len, const char **data,
                   size_t *dlen) {
    const char *bp = strcasestr(ctype, "boundary=");
    if (!bp) return -1;
    bp += 9;
    char boundary[80]; /* RFC 2046: at most 70 characters, after the CRLF and "--" */
    size_t bl = 0;
    int quoted = *bp == '"';
    if (quoted) bp++;
    boundary[bl++] = '-', boundary[bl++] = '-';
    while (*bp && bl < sizeof boundary - 1 && (quoted ? *bp != '"' : (*bp != ';' && *bp != ' ')))
        boundary[bl++] = *bp++;
    boundary[bl] = '\0';
    if (bl == 2) return -1;
    const char *p = body, *end = body + len;
    int found = 0;
    while ((p = memmem(p, (size_t)(end - p), boundary, bl))) {
        p += bl;
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') break; /* the closing boundary */
        const char *hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!hend) break;
        int is_file = names_file(p, (size_t)(hend - p));
        const char *start = hend + 4;
        const char *next = memmem(start, (size_t)(end - start), boundary, bl);
        if (!next) break;
        if (is_file && found) return -2; /* a second image would go unanswered */
        if (is_file) {
            *data = start;
            *dlen = (size_t)(next - start) >= 2 ? (size_t)(next - start) - 2 : 0; /* CRLF */
            found = 1;
        }
        p = next;
    }
    return found ? 0 : -1;
}
