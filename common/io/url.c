/* url.c: see url.h. */
#include "url.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define URL_MAX 2048

static int unreserved(int c) { return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~'; }

static int hexval(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* %7e -> ~, %2f -> %2F: RFC 3986 6.2.2's percent-encoding normalisation,
 * in place. -1 for a % not followed by two hex digits. */
static int norm_escapes(char *s) {
    char *w = s;
    for (const char *r = s; *r;) {
        if (*r != '%') {
            *w++ = *r++;
            continue;
        }
        int hi = hexval((unsigned char)r[1]), lo = hi < 0 ? -1 : hexval((unsigned char)r[2]);
        if (hi < 0 || lo < 0) return -1;
        int c = hi * 16 + lo;
        if (unreserved(c)) {
            *w++ = (char)c;
        } else {
            *w++ = '%';
            *w++ = (char)toupper((unsigned char)r[1]);
            *w++ = (char)toupper((unsigned char)r[2]);
        }
        r += 3;
    }
    *w = '\0';
    return 0;
}

static int norm_once(const char *in, char *out, size_t n, char *why, size_t wn) {
    size_t len = strlen(in);
    if (len > URL_MAX) {
        snprintf(why, wn, "longer than %d characters", URL_MAX);
        return -1;
    }
    if (strncasecmp(in, "http://", 7) && strncasecmp(in, "https://", 8)) {
        snprintf(why, wn, "not an http:// or https:// URL");
        return -1;
    }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)in[i] <= 0x20 || in[i] == 0x7f) {
            snprintf(why, wn, "contains a space or control character");
            return -1;
        }
    const char *auth = strstr(in, "://") + 3; /* libcurl reads http:///a.jpg as host a.jpg */
    if (!*auth || strchr("/:?#", *auth)) {
        snprintf(why, wn, "has no host");
        return -1;
    }
    CURLU *h = curl_url();
    if (!h) {
        snprintf(why, wn, "out of memory");
        return -1;
    }
    int rc = -1;
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL, *user = NULL,
         *pass = NULL;
    CURLUcode uc = curl_url_set(h, CURLUPART_URL, in, 0); /* removes dot segments */
    if (uc) {
        snprintf(why, wn, "not a URL libcurl can parse (%s)", curl_url_strerror(uc));
        goto out;
    }
    if (curl_url_get(h, CURLUPART_HOST, &host, 0) || !host || !*host) {
        snprintf(why, wn, "has no host");
        goto out;
    }
    if (strchr(host, '%') && host[0] != '[') { /* libcurl 7.88 lets exa%mple through */
        snprintf(why, wn, "a host with a %% in it");
        goto out;
    }
    curl_url_get(h, CURLUPART_SCHEME, &scheme, 0);
    curl_url_get(h, CURLUPART_PORT, &port, CURLU_NO_DEFAULT_PORT);
    curl_url_get(h, CURLUPART_USER, &user, 0);
    curl_url_get(h, CURLUPART_PASSWORD, &pass, 0);
    curl_url_get(h, CURLUPART_PATH, &path, 0);
    curl_url_get(h, CURLUPART_QUERY, &query, 0);
    for (char *c = scheme; c && *c; c++) *c = (char)tolower((unsigned char)*c);
    for (char *c = host; *c; c++) *c = (char)tolower((unsigned char)*c);
    if ((path && norm_escapes(path)) || (query && norm_escapes(query)) ||
        (user && norm_escapes(user)) || (pass && norm_escapes(pass))) {
        snprintf(why, wn, "a %% not followed by two hex digits");
        goto out;
    }
    int w = snprintf(out, n, "%s://%s%s%s%s%s%s%s%s%s%s", scheme, user ? user : "",
                     pass ? ":" : "", pass ? pass : "", user ? "@" : "", host, port ? ":" : "",
                     port ? port : "", path && *path ? path : "/", query ? "?" : "",
                     query ? query : "");
    if (w < 0 || (size_t)w >= n || w > URL_MAX) {
        snprintf(why, wn, "longer than %d characters once normalised", URL_MAX);
        goto out;
    }
    rc = 0;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(query);
    curl_free(user);
    curl_free(pass);
    curl_url_cleanup(h);
    return rc;
}

int url_normalize(const char *in, char *out, size_t n, char *why, size_t wn) {
    /* twice: a decoded escape (%2E) can make a dot segment the first pass
     * kept; the second removes it, and changes nothing else */
    char once[URL_MAX + 1];
    if (norm_once(in, once, sizeof once, why, wn)) return -1;
    return norm_once(once, out, n, why, wn);
}
