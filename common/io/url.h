/* url.h: URLs as ursa keeps them: parsed with libcurl's URL API and
 * written one way, so one image listed five ways is one URL. */
#ifndef URSA_URL_H
#define URSA_URL_H

#include <stddef.h>

/* The normal form of an http(s) URL into out (n bytes): scheme and host
 * in lower case, the default port dropped, the fragment dropped, dot
 * segments removed, percent-escapes of unreserved characters decoded and
 * the rest in upper-case hex. 0, or -1 with why (a URL libcurl cannot
 * parse, another scheme, no host, a control character or space, or longer
 * than 2048 bytes before or after). */
int url_normalize(const char *in, char *out, size_t n, char *why, size_t wn);

#endif
