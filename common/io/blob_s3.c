/* blob_s3.c: the blob store in an S3-compatible bucket; see blob.h.
 *
 * Objects are <prefix>/<k[0..1]>/<key>, addressed path-style
 * (<endpoint>/<bucket>/<object>), so Ceph RGW, MinIO and AWS all take them.
 * libcurl signs every request (CURLOPT_AWS_SIGV4); libcurl 7.88 does not hash
 * the payload itself, so each request carries x-amz-content-sha256, which for
 * a PUT is the blob's own key. A PUT of an object that exists writes the
 * same bytes again, which changes nothing but its LastModified: that is
 * the time `ursa gc` keeps what was written lately by (a conditional PUT,
 * If-None-Match: *, would leave an old object looking unused while a new
 * message refers to it). A listing (ListObjectsV2) is read with expat.
 *
 * Reads, deletes and durable writes are synchronous, on easy handles kept in a pool so
 * their connections are reused. blob_put_lazy() hands the bytes to one
 * uploader thread that runs up to max_inflight uploads at once on a curl
 * multi handle; blob_store_sync() waits for them. An upload that fails is
 * never dropped: it is tried again with backoff until it is stored or the
 * store is destroyed, and while one has used up its tries the store counts
 * as failing (sync and a full queue say URSA_ERR_UNAVAILABLE), which the
 * daemons treat as backpressure, like a full disk. */
#include "blob_impl.h"

#include <curl/curl.h>
#include <errno.h>
#include <expat.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"
#include "util.h"

/* sha256 of no bytes: the payload hash of GET and HEAD */
static const char EMPTY_SHA256[] =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

enum { BACKOFF_BASE_MS = 100, BACKOFF_MAX_MS = 2000 };

typedef struct pooled {
    CURL *h;
    struct pooled *next;
} pooled;

typedef struct upload {
    char key[65];
    char *data;
    size_t len;
    int attempt;
    int64_t due; /* not before this (monotonic ms) */
    CURL *h;     /* while in flight */
    struct curl_slist *hdrs;
    char err[160]; /* the reply's start, for its error code */
    size_t err_len;
    struct upload *next;
} upload;

typedef struct {
    blob_store *bs;
    char endpoint[512], bucket[64], prefix[256], region[64];
    char userpwd[512], sigv4[96], token_hdr[2200];
    int timeout_ms, retries, max_inflight;
    pthread_mutex_t mu; /* everything below */
    pthread_cond_t cv;  /* an upload ended */
    pooled *idle;       /* easy handles for synchronous requests */
    upload *queue;      /* uploads waiting to start, or to start again */
    upload *running;    /* uploads on the multi handle (linked by next) */
    int pending;        /* uploads queued or in flight */
    int inflight;
    int failing;        /* an upload has used up its tries */
    int stop;
    CURLM *multi; /* the uploader thread's alone, but for curl_multi_wakeup */
    pthread_t thr;
    int thr_started;
} s3;

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void count(s3 *s, uint64_t *field, uint64_t v) {
    (void)s;
    __atomic_fetch_add(field, v, __ATOMIC_RELAXED);
}

/* ---- one request ------------------------------------------------------------------ */

typedef struct {
    char *buf;
    size_t len, cap, max;
    int over;
    CURL *h;
} sink;

static size_t on_body(char *p, size_t sz, size_t nm, void *ud) {
    sink *k = ud;
    size_t n = sz * nm;
    long st = 0;
    curl_easy_getinfo(k->h, CURLINFO_RESPONSE_CODE, &st);
    if (st < 200 || st >= 300) { /* an error reply: its start is enough */
        if (k->len >= 4096) return n;
        if (n > 4096 - k->len) n = 4096 - k->len;
    } else if (k->len + n > k->max) {
        k->over = 1;
        return 0; /* aborts the transfer */
    }
    if (k->len + n + 1 > k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 16384;
        while (cap < k->len + n + 1) cap *= 2;
        char *b = realloc(k->buf, cap);
        if (!b) return 0;
        k->buf = b;
        k->cap = cap;
    }
    memcpy(k->buf + k->len, p, n);
    k->len += n;
    return sz * nm;
}

/* The error code of an S3 error reply (<Code>NoSuchBucket</Code>), or "". */
static void error_code(const char *body, size_t len, char *out, size_t n) {
    out[0] = '\0';
    if (!body) return;
    const char *end = body + len;
    for (const char *p = body; p + 6 < end; p++) {
        if (memcmp(p, "<Code>", 6) != 0) continue;
        p += 6;
        size_t i = 0;
        while (p + i < end && p[i] != '<' && i + 1 < n) {
            char ch = p[i];
            out[i++] = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                               (ch >= '0' && ch <= '9')
                           ? ch
                           : '?';
        }
        out[i] = '\0';
        return;
    }
}

static int retriable(CURLcode rc, long status) {
    if (rc != CURLE_OK)
        return rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_COULDNT_CONNECT ||
               rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_SEND_ERROR ||
               rc == CURLE_RECV_ERROR || rc == CURLE_GOT_NOTHING || rc == CURLE_PARTIAL_FILE ||
               rc == CURLE_SSL_CONNECT_ERROR;
    return status >= 500 || status == 429 || status == 408;
}

/* s3://bucket/prefix/ab/key, or s3://bucket for NULL: how errors name it. */
static void objname(const s3 *s, const char *key, char *out, size_t n) {
    if (key) snprintf(out, n, "s3://%s/%s%.2s/%s", s->bucket, s->prefix, key, key);
    else snprintf(out, n, "s3://%s", s->bucket);
}

static void object_url(const s3 *s, const char *key, char *out, size_t n) {
    if (key)
        snprintf(out, n, "%s/%s/%s%.2s/%s", s->endpoint, s->bucket, s->prefix, key, key);
    else
        snprintf(out, n, "%s/%s", s->endpoint, s->bucket);
}

static struct curl_slist *headers(const s3 *s, const char *payload_sha, int put) {
    char h[100];
    snprintf(h, sizeof h, "x-amz-content-sha256: %s", payload_sha);
    struct curl_slist *l = curl_slist_append(NULL, h), *t;
    /* no "Expect:" here to spare the 100-continue round trip of bodies over
     * 1 MB: libcurl 7.88 signs the empty header it then does not send, and
     * the store refuses the signature */
    if (l && put && (t = curl_slist_append(l, "Content-Type: application/octet-stream"))) l = t;
    if (l && s->token_hdr[0] && (t = curl_slist_append(l, s->token_hdr))) l = t;
    return l;
}

static void setup(const s3 *s, CURL *h, const char *url, struct curl_slist *hdrs) {
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(h, CURLOPT_USERPWD, s->userpwd);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)s->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(s->timeout_ms < 5000 ? s->timeout_ms : 5000));
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
}

static CURL *take(s3 *s) {
    pthread_mutex_lock(&s->mu);
    pooled *p = s->idle;
    if (p) s->idle = p->next;
    pthread_mutex_unlock(&s->mu);
    if (!p) return curl_easy_init();
    CURL *h = p->h;
    free(p);
    return h;
}

static void give_back(s3 *s, CURL *h) {
    pooled *p = malloc(sizeof *p);
    if (!p) {
        curl_easy_cleanup(h);
        return;
    }
    curl_easy_reset(h); /* options only: its connection stays open for the next */
    p->h = h;
    pthread_mutex_lock(&s->mu);
    p->next = s->idle;
    s->idle = p;
    pthread_mutex_unlock(&s->mu);
}

/* One synchronous request with its retries. method is "GET", "HEAD", "DELETE" or
 * "PUT"; key NULL means the bucket (with query); body for a PUT; the reply
 * goes to *k (up to k->max bytes). *status gets the last HTTP status (0 on
 * a network error). Returns OK when a reply came, else UNAVAILABLE after
 * the tries, with the failure noted; TOO_LARGE when the reply passed max. */
static ursa_err request(s3 *s, const char *method, const char *key, const char *query,
                        const void *body, size_t len, sink *k, long *status, int tries) {
    char url[8192];
    object_url(s, key, url, sizeof url);
    if (query && (size_t)snprintf(url + strlen(url), sizeof url - strlen(url), "?%s", query) >=
                     sizeof url - strlen(url))
        return URSA_ERR_INVALID; /* never a shorter query than asked */
    int put = !strcmp(method, "PUT");
    struct curl_slist *hdrs = headers(s, put ? key : EMPTY_SHA256, put);
    CURL *h = take(s);
    if (!h || !hdrs) {
        curl_slist_free_all(hdrs);
        if (h) curl_easy_cleanup(h);
        return URSA_ERR_NOMEM;
    }
    ursa_err err = URSA_ERR_UNAVAILABLE;
    for (int attempt = 0;; attempt++) {
        if (attempt) {
            count(s, &s->bs->st.retries, 1);
            util_sleep_ms(util_backoff_ms(attempt, BACKOFF_BASE_MS, BACKOFF_MAX_MS));
        }
        k->len = 0;
        k->over = 0;
        k->h = h;
        setup(s, h, url, hdrs);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, k);
        if (put) {
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, len ? body : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        } else if (!strcmp(method, "HEAD")) {
            curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        } else if (!strcmp(method, "DELETE")) {
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
        }
        int64_t t0 = now_us();
        CURLcode rc = curl_easy_perform(h);
        *status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
        count(s, &s->bs->st.requests, 1);
        count(s, &s->bs->st.latency_us, (uint64_t)(now_us() - t0));
        if (put && rc == CURLE_OK) count(s, &s->bs->st.bytes_out, len);
        if (k->over) {
            err = URSA_ERR_TOO_LARGE;
            break;
        }
        count(s, &s->bs->st.bytes_in, k->len);
        if (rc == CURLE_OK && !retriable(rc, *status)) {
            err = URSA_OK;
            break;
        }
        if (attempt >= tries || !retriable(rc, *status)) {
            char code[64], obj[400];
            error_code(k->buf, k->len, code, sizeof code);
            objname(s, key, obj, sizeof obj);
            count(s, &s->bs->st.errors, 1);
            if (rc != CURLE_OK)
                blob_note_error(s->bs, "%s: %s %s: %s (%d tries)", obj, method, s->endpoint,
                                curl_easy_strerror(rc), attempt + 1);
            else
                blob_note_error(s->bs, "%s: %s %s: HTTP %ld %s (%d tries)", obj, method,
                                s->endpoint, *status, code, attempt + 1);
            break;
        }
    }
    curl_slist_free_all(hdrs);
    give_back(s, h);
    return err;
}

/* ---- the backend ------------------------------------------------------------------ */

static ursa_err locate(void *self, const char *key, char *out, size_t size) {
    s3 *s = self;
    if (snprintf(out, size, "s3://%s/%s%.2s/%s", s->bucket, s->prefix, key, key) >= (int)size)
        return URSA_ERR_INVALID;
    return URSA_OK;
}

static uint64_t free_bytes(void *self) {
    (void)self;
    return UINT64_MAX;
}

static int exists(void *self, const char *key) {
    s3 *s = self;
    sink k = {.max = 4096};
    long st = 0;
    ursa_err err = request(s, "HEAD", key, NULL, NULL, 0, &k, &st, s->retries);
    free(k.buf);
    return err == URSA_OK && st == 200;
}

static ursa_err status_err(s3 *s, const char *what, const char *key, long st, const sink *k) {
    if (st >= 200 && st < 300) return URSA_OK;
    if (st == 404) return URSA_ERR_NOT_FOUND;
    char code[64];
    error_code(k->buf, k->len, code, sizeof code);
    count(s, &s->bs->st.errors, 1);
    blob_note_error(s->bs, "s3://%s/%s%.2s/%s: %s: HTTP %ld %s", s->bucket, s->prefix, key, key,
                    what, st, code);
    ULOG_WARN("event=s3_refused op=%s bucket=%s key=%s status=%ld code=%s", what, s->bucket,
              key, st, code[0] ? code : "-");
    /* 403 and the like: wrong credentials or policy, which an operator
     * mends; the work waits for it rather than being dropped */
    return URSA_ERR_UNAVAILABLE;
}

static ursa_err get(void *self, const char *key, size_t max, char **data, size_t *len) {
    s3 *s = self;
    sink k = {.max = max};
    long st = 0;
    ursa_err err = request(s, "GET", key, NULL, NULL, 0, &k, &st, s->retries);
    if (!err && st != 200) err = status_err(s, "GET", key, st, &k);
    if (err) {
        if (err == URSA_ERR_UNAVAILABLE && !st)
            ULOG_WARN("event=s3_unreachable op=GET bucket=%s key=%s endpoint=%s", s->bucket, key,
                      s->endpoint);
        free(k.buf);
        return err;
    }
    if (!k.buf && !(k.buf = malloc(1))) return URSA_ERR_NOMEM;
    *data = k.buf;
    *len = k.len;
    return URSA_OK;
}

static ursa_err put_now(s3 *s, const char *key, const void *data, size_t len) {
    sink k = {.max = 65536};
    long st = 0;
    ursa_err err = request(s, "PUT", key, NULL, data, len, &k, &st, s->retries);
    if (!err && st != 412) err = status_err(s, "PUT", key, st, &k);
    free(k.buf);
    return err == URSA_ERR_NOT_FOUND ? URSA_ERR_UNAVAILABLE : err; /* 404: the bucket is gone */
}

/* ---- background uploads ----------------------------------------------------------- */

static size_t on_err_body(char *p, size_t sz, size_t nm, void *ud) {
    upload *u = ud;
    size_t n = sz * nm, room = sizeof u->err - 1 - u->err_len;
    memcpy(u->err + u->err_len, p, n < room ? n : room);
    u->err_len += n < room ? n : room;
    return n;
}

static void upload_free(upload *u) {
    if (!u) return;
    curl_slist_free_all(u->hdrs);
    if (u->h) curl_easy_cleanup(u->h);
    free(u->data);
    free(u);
}

/* Starts u on the multi handle (mu held). */
static int upload_start(s3 *s, upload *u) {
    char url[1200];
    object_url(s, u->key, url, sizeof url);
    if (!u->hdrs && !(u->hdrs = headers(s, u->key, 1))) return -1;
    if (!u->h && !(u->h = curl_easy_init())) return -1;
    curl_easy_reset(u->h);
    setup(s, u->h, url, u->hdrs);
    curl_easy_setopt(u->h, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(u->h, CURLOPT_POSTFIELDS, u->len ? u->data : "");
    curl_easy_setopt(u->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)u->len);
    curl_easy_setopt(u->h, CURLOPT_WRITEFUNCTION, on_err_body);
    curl_easy_setopt(u->h, CURLOPT_WRITEDATA, u);
    curl_easy_setopt(u->h, CURLOPT_PRIVATE, u);
    u->err_len = 0;
    if (curl_multi_add_handle(s->multi, u->h) != CURLM_OK) return -1;
    u->next = s->running;
    s->running = u;
    s->inflight++;
    return 0;
}

/* An upload ended (mu held): done, or back in the queue for later. */
static void upload_ended(s3 *s, upload *u, CURLcode rc) {
    long st = 0;
    double secs = 0;
    curl_easy_getinfo(u->h, CURLINFO_RESPONSE_CODE, &st);
    curl_easy_getinfo(u->h, CURLINFO_TOTAL_TIME, &secs);
    curl_multi_remove_handle(s->multi, u->h);
    for (upload **pp = &s->running; *pp; pp = &(*pp)->next)
        if (*pp == u) {
            *pp = u->next;
            break;
        }
    s->inflight--;
    count(s, &s->bs->st.requests, 1);
    count(s, &s->bs->st.latency_us, (uint64_t)(secs * 1e6));
    if (rc == CURLE_OK && ((st >= 200 && st < 300) || st == 412)) {
        count(s, &s->bs->st.bytes_out, u->len);
        s->pending--;
        s->failing = 0;
        upload_free(u);
        pthread_cond_broadcast(&s->cv);
        return;
    }
    u->attempt++;
    char code[64];
    error_code(u->err, u->err_len, code, sizeof code);
    if (u->attempt > s->retries) {
        count(s, &s->bs->st.errors, 1);
        if (!s->failing)
            ULOG_WARN("event=s3_upload_failing bucket=%s key=%s status=%ld code=%s err=\"%s\" "
                      "tries=%d note=\"kept and tried again until it is stored\"",
                      s->bucket, u->key, st, code[0] ? code : "-",
                      rc ? curl_easy_strerror(rc) : "-", u->attempt);
        if (rc)
            blob_note_error(s->bs, "s3://%s/%s%.2s/%s: PUT %s: %s (%d tries)", s->bucket,
                            s->prefix, u->key, u->key, s->endpoint, curl_easy_strerror(rc),
                            u->attempt);
        else
            blob_note_error(s->bs, "s3://%s/%s%.2s/%s: PUT %s: HTTP %ld %s (%d tries)",
                            s->bucket, s->prefix, u->key, u->key, s->endpoint, st, code,
                            u->attempt);
        s->failing = 1;
        pthread_cond_broadcast(&s->cv);
    } else {
        count(s, &s->bs->st.retries, 1);
    }
    u->due = util_mono_ms() + util_backoff_ms(u->attempt, BACKOFF_BASE_MS, BACKOFF_MAX_MS);
    u->next = s->queue;
    s->queue = u;
}

static void *uploader(void *arg) {
    s3 *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        int64_t now = util_mono_ms(), next_due = now + 200;
        for (upload **pp = &s->queue; *pp && s->inflight < s->max_inflight;) {
            upload *u = *pp;
            if (u->due > now) {
                if (u->due < next_due) next_due = u->due;
                pp = &u->next;
                continue;
            }
            *pp = u->next;
            if (upload_start(s, u)) { /* out of memory: again a little later */
                u->due = now + 100;
                u->next = *pp;
                *pp = u;
                pp = &u->next;
            }
        }
        pthread_mutex_unlock(&s->mu);
        int running = 0, left = 0;
        curl_multi_perform(s->multi, &running);
        CURLMsg *m;
        pthread_mutex_lock(&s->mu);
        while ((m = curl_multi_info_read(s->multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            upload *u = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&u);
            upload_ended(s, u, m->data.result);
        }
        int wait = (int)(next_due - util_mono_ms());
        pthread_mutex_unlock(&s->mu);
        curl_multi_poll(s->multi, NULL, 0, wait < 1 ? 1 : wait > 200 ? 200 : wait, NULL);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* At most this many uploads wait in memory (max_inflight of them running). */
static int queue_cap(const s3 *s) { return s->max_inflight * 8; }

static ursa_err put(void *self, const char *key, const void *data, size_t len, int durable) {
    s3 *s = self;
    if (durable) return put_now(s, key, data, len);
    upload *u = calloc(1, sizeof *u);
    if (!u || !(u->data = malloc(len ? len : 1))) {
        free(u);
        return URSA_ERR_NOMEM;
    }
    memcpy(u->data, data, len);
    u->len = len;
    memcpy(u->key, key, 65);
    pthread_mutex_lock(&s->mu);
    while (s->pending >= queue_cap(s)) {
        if (s->failing) { /* the caller holds it and tries later */
            pthread_mutex_unlock(&s->mu);
            upload_free(u);
            return URSA_ERR_UNAVAILABLE;
        }
        pthread_cond_wait(&s->cv, &s->mu);
    }
    u->next = s->queue;
    s->queue = u;
    s->pending++;
    pthread_mutex_unlock(&s->mu);
    curl_multi_wakeup(s->multi);
    return URSA_OK;
}

static ursa_err sync_all(void *self) {
    s3 *s = self;
    pthread_mutex_lock(&s->mu);
    while (s->pending && !s->failing) pthread_cond_wait(&s->cv, &s->mu);
    ursa_err err = s->pending ? URSA_ERR_UNAVAILABLE : URSA_OK;
    pthread_mutex_unlock(&s->mu);
    return err;
}

static void destroy(void *self) {
    s3 *s = self;
    if (s->thr_started) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_mutex_unlock(&s->mu);
        curl_multi_wakeup(s->multi);
        pthread_join(s->thr, NULL);
    }
    /* uploads not yet stored were never recorded: their messages come again */
    while (s->queue) {
        upload *u = s->queue;
        s->queue = u->next;
        upload_free(u);
    }
    while (s->running) {
        upload *u = s->running;
        s->running = u->next;
        curl_multi_remove_handle(s->multi, u->h);
        upload_free(u);
    }
    if (s->multi) curl_multi_cleanup(s->multi);
    while (s->idle) {
        pooled *p = s->idle;
        s->idle = p->next;
        curl_easy_cleanup(p->h);
        free(p);
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static ursa_err del(void *self, const char *key) {
    s3 *s = self;
    sink k = {.max = 65536};
    long st = 0;
    ursa_err err = request(s, "DELETE", key, NULL, NULL, 0, &k, &st, s->retries);
    if (!err) err = status_err(s, "DELETE", key, st, &k);
    free(k.buf);
    return err == URSA_ERR_NOT_FOUND ? URSA_OK : err;
}

static int check_bucket(s3 *s, int tries, char *errstr, size_t n);

static ursa_err ping(void *self, char *why, size_t n) {
    s3 *s = self;
    pthread_mutex_lock(&s->mu);
    int failing = s->failing;
    pthread_mutex_unlock(&s->mu);
    if (failing) {
        char last[400];
        blob_store_last_error(s->bs, last, sizeof last);
        snprintf(why, n, "uploads failing: %s", last);
        return URSA_ERR_UNAVAILABLE;
    }
    return check_bucket(s, 0, why, n) ? URSA_ERR_UNAVAILABLE : URSA_OK;
}

/* ---- listing: ListObjectsV2, its XML read by expat ------------------------------------ */

/* What a page of a listing says. */
typedef struct {
    blob_list_fn *fn;
    void *ctx;
    const char *only; /* a key: the others are left out (blob mtime's listing) */
    const char *prefix; /* the store's ("" or "p/") */
    size_t plen;
    int token_cut;      /* a continuation token too long to hold */
    XML_Parser xp;      /* the page's parser */
    int stop, truncated, in_contents, field; /* field: F_* being read */
    int64_t found_ms;                        /* the only key's time, -1 until seen */
    char key[1100], modified[48], size[32], token[1100];
    size_t key_len, modified_len, size_len, token_len;
} lister;

enum { F_NONE, F_KEY, F_MODIFIED, F_SIZE, F_TRUNCATED, F_TOKEN };

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **attrs) {
    lister *L = ud;
    (void)attrs;
    if (!strcmp(name, "Contents")) {
        L->in_contents = 1;
        L->key_len = L->modified_len = L->size_len = 0;
    } else if (L->in_contents && !strcmp(name, "Key")) {
        L->field = F_KEY;
    } else if (L->in_contents && !strcmp(name, "LastModified")) {
        L->field = F_MODIFIED;
    } else if (L->in_contents && !strcmp(name, "Size")) {
        L->field = F_SIZE;
    } else if (!L->in_contents && !strcmp(name, "IsTruncated")) {
        L->field = F_TRUNCATED;
    } else if (!L->in_contents && !strcmp(name, "NextContinuationToken")) {
        L->field = F_TOKEN;
        L->token_len = 0;
    }
}

/* text into buf (cap bytes with its NUL), cut where it does not fit */
static void add_text(char *buf, size_t cap, size_t *len, const XML_Char *s, int n) {
    size_t room = cap - 1 - *len, m = (size_t)n < room ? (size_t)n : room;
    memcpy(buf + *len, s, m);
    *len += m;
    buf[*len] = '\0';
}

/* A listing has no DOCTYPE: one is refused before any entity in it is
 * expanded (a hostile server's billion laughs). */
static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int internal) {
    (void)name, (void)sysid, (void)pubid, (void)internal;
    XML_StopParser(((lister *)ud)->xp, XML_FALSE);
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int n) {
    lister *L = ud;
    switch (L->field) {
    case F_KEY: add_text(L->key, sizeof L->key, &L->key_len, s, n); break;
    case F_MODIFIED: add_text(L->modified, sizeof L->modified, &L->modified_len, s, n); break;
    case F_SIZE: add_text(L->size, sizeof L->size, &L->size_len, s, n); break;
    case F_TOKEN:
        L->token_cut |= L->token_len + (size_t)n >= sizeof L->token;
        add_text(L->token, sizeof L->token, &L->token_len, s, n);
        break;
    case F_TRUNCATED: L->truncated = n >= 4 && !strncmp(s, "true", 4); break;
    default: break;
    }
}

/* "2026-12-07T22:00:00.123Z" as ms since the epoch; -1 when it is not that */
static int64_t iso_ms(const char *t) {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *rest = strptime(t, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest) return -1;
    int64_t ms = (int64_t)timegm(&tm) * 1000;
    if (rest[0] == '.' && rest[1] >= '0' && rest[1] <= '9') ms += atoi(rest + 1) % 1000;
    return ms;
}

static void XMLCALL on_end(void *ud, const XML_Char *name) {
    lister *L = ud;
    L->field = F_NONE;
    if (strcmp(name, "Contents") || !L->in_contents) return;
    L->in_contents = 0;
    /* <prefix>ab/<key> exactly: the blob's key, in its own shard, under
     * this store's prefix (another prefix's objects are another store's) */
    const char *k = L->key_len >= 64 ? L->key + L->key_len - 64 : "";
    int64_t ms = iso_ms(L->modified);
    if (!blob_key_valid(k) || L->key_len != L->plen + 67 || strncmp(L->key, L->prefix, L->plen) ||
        strncmp(L->key + L->plen, k, 2) || L->key[L->plen + 2] != '/' || ms < 0 || L->stop)
        return;
    if (L->only) {
        if (!strcmp(k, L->only)) L->found_ms = ms;
        return;
    }
    L->stop = L->fn(L->ctx, k, strtoull(L->size, NULL, 10), ms);
}

/* v percent-encoded as SigV4's canonical query wants: all but A-Z a-z 0-9 - _ . ~ */
static void query_escape(const char *v, char *out, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *v && o + 4 < n; v++) {
        unsigned char c = (unsigned char)*v;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

/* Lists the objects under the store's prefix and then `within`, page by
 * page, into L. */
static ursa_err list_into(s3 *s, const char *within, int max_keys, lister *L) {
    char prefix[600], eprefix[1800], etoken[3400], query[5400];
    snprintf(prefix, sizeof prefix, "%s%s", s->prefix, within);
    query_escape(prefix, eprefix, sizeof eprefix);
    L->prefix = s->prefix;
    L->plen = strlen(s->prefix);
    L->token[0] = '\0';
    L->token_len = 0;
    ursa_err err = URSA_OK;
    char last[sizeof L->token] = "";
    int pages = 0;
    do {
        /* a page that says there is more must say where it goes on, and go
         * on somewhere new: a server that does not is refused, not followed
         * forever */
        if (pages && (!L->token_len || L->token_cut || !strcmp(L->token, last) ||
                      pages >= 1000000)) {
            blob_note_error(s->bs, "s3://%s/%s: a listing that does not go on (page %d)",
                            s->bucket, prefix, pages + 1);
            return URSA_ERR_CORRUPT;
        }
        snprintf(last, sizeof last, "%s", L->token);
        pages++;
        query_escape(L->token, etoken, sizeof etoken);
        /* the names in canonical (sorted) order: libcurl signs the query as given */
        snprintf(query, sizeof query, "%s%s%slist-type=2&max-keys=%d%s%s",
                 etoken[0] ? "continuation-token=" : "", etoken, etoken[0] ? "&" : "",
                 max_keys, eprefix[0] ? "&prefix=" : "", eprefix);
        sink k = {.max = 16 << 20};
        long st = 0;
        err = request(s, "GET", NULL, query, NULL, 0, &k, &st, s->retries);
        if (!err && st != 200) err = status_err(s, "LIST", "", st, &k);
        if (err) {
            free(k.buf);
            return err;
        }
        XML_Parser xp = XML_ParserCreate(NULL);
        if (!xp) {
            free(k.buf);
            return URSA_ERR_NOMEM;
        }
        L->truncated = 0;
        L->token_len = 0;
        L->token[0] = '\0';
        L->token_cut = 0;
        XML_SetUserData(xp, L);
        XML_SetElementHandler(xp, on_start, on_end);
        XML_SetCharacterDataHandler(xp, on_text);
        XML_SetStartDoctypeDeclHandler(xp, on_doctype);
        L->xp = xp;
        int ok = XML_Parse(xp, k.buf ? k.buf : "", (int)k.len, 1) == XML_STATUS_OK;
        if (!ok)
            blob_note_error(s->bs, "s3://%s/%s: a listing that is not XML: %s", s->bucket,
                            prefix, XML_ErrorString(XML_GetErrorCode(xp)));
        XML_ParserFree(xp);
        free(k.buf);
        if (!ok) return URSA_ERR_CORRUPT;
    } while (L->truncated && !L->stop);
    return URSA_OK;
}

static ursa_err list(void *self, blob_list_fn *fn, void *ctx) {
    lister L = {.fn = fn, .ctx = ctx, .found_ms = -1};
    return list_into(self, "", 1000, &L);
}

/* One listing of the object's own name: its LastModified. */
static ursa_err mtime(void *self, const char *key, int64_t *ms) {
    char within[80];
    snprintf(within, sizeof within, "%.2s/%s", key, key);
    lister L = {.only = key, .found_ms = -1};
    ursa_err err = list_into(self, within, 1, &L);
    if (err) return err;
    if (L.found_ms < 0) return URSA_ERR_NOT_FOUND;
    *ms = L.found_ms;
    return URSA_OK;
}

static const blob_backend s3_backend = {put,    get,  exists,  sync_all, del,   locate,
                                        free_bytes, ping, destroy, list, mtime, NULL};

/* ---- opening ---------------------------------------------------------------------- */

static int all_of(const char *v, const char *set) { return v[strspn(v, set)] == '\0'; }

#define LOWER "abcdefghijklmnopqrstuvwxyz"
#define UPPER "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#define DIGITS "0123456789"

/* s3://BUCKET[/PREFIX] into s->bucket and s->prefix ("" or "PREFIX/"). */
static int parse_url(s3 *s, const char *url, char *errstr, size_t n) {
    if (strncmp(url, "s3://", 5) != 0) {
        snprintf(errstr, n, "blob.url %s: expected s3://BUCKET[/PREFIX]", url);
        return -1;
    }
    const char *b = url + 5, *slash = strchr(b, '/');
    size_t bl = slash ? (size_t)(slash - b) : strlen(b);
    if (bl < 3 || bl > 63 || bl >= sizeof s->bucket) {
        snprintf(errstr, n, "blob.url %s: a bucket name has 3 to 63 characters", url);
        return -1;
    }
    memcpy(s->bucket, b, bl);
    s->bucket[bl] = '\0';
    if (!all_of(s->bucket, LOWER DIGITS ".-")) {
        snprintf(errstr, n, "blob.url %s: a bucket name is a-z, 0-9, '.' and '-'", url);
        return -1;
    }
    const char *p = slash ? slash + 1 : "";
    size_t pl = strlen(p);
    while (pl && p[pl - 1] == '/') pl--;
    if (pl + 2 > sizeof s->prefix) {
        snprintf(errstr, n, "blob.url %s: prefix too long", url);
        return -1;
    }
    memcpy(s->prefix, p, pl);
    s->prefix[pl] = '\0';
    /* plain characters only: the signed path is then the path as sent */
    if (!all_of(s->prefix, LOWER UPPER DIGITS "._-/") || strstr(s->prefix, "//") ||
        strstr(s->prefix, "..") || s->prefix[0] == '/') {
        snprintf(errstr, n, "blob.url %s: a prefix is A-Z, a-z, 0-9, '.', '_', '-' and single "
                            "'/'", url);
        return -1;
    }
    if (pl) strcat(s->prefix, "/");
    return 0;
}

/* Checks that the bucket answers: one listing of at most one key. */
static int check_bucket(s3 *s, int tries, char *errstr, size_t n) {
    sink k = {.max = 1 << 20};
    long st = 0;
    /* already in canonical order: libcurl 7.88 signs the query as given */
    ursa_err err = request(s, "GET", NULL, "list-type=2&max-keys=1", NULL, 0, &k, &st, tries);
    char code[64];
    error_code(k.buf, k.len, code, sizeof code);
    free(k.buf);
    if (err || !st) {
        char why[512];
        blob_store_last_error(s->bs, why, sizeof why);
        snprintf(errstr, n, "blob store s3://%s at %s: cannot reach it (%s)", s->bucket,
                 s->endpoint, why);
        return -1;
    }
    if (st == 200) return 0;
    if (st == 404)
        snprintf(errstr, n, "blob store s3://%s at %s: no such bucket (%s); create it first",
                 s->bucket, s->endpoint, code[0] ? code : "HTTP 404");
    else if (st == 403)
        snprintf(errstr, n, "blob store s3://%s at %s: access denied (%s): check "
                            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and blob.s3-region",
                 s->bucket, s->endpoint, code[0] ? code : "HTTP 403");
    else
        snprintf(errstr, n, "blob store s3://%s at %s: HTTP %ld %s", s->bucket, s->endpoint, st,
                 code);
    return -1;
}

static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

ursa_err blob_s3_open(blob_store *bs, const blob_s3_opts *o, char *errstr, size_t n) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, curl_init_once);
    s3 *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(errstr, n, "out of memory");
        return URSA_ERR_NOMEM;
    }
    s->bs = bs;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    ursa_err err = URSA_ERR_CONFIG;
    const char *region = o->region && *o->region ? o->region : "us-east-1";
    if (parse_url(s, o->url ? o->url : "", errstr, n)) goto fail;
    if (strlen(region) >= sizeof s->region || !all_of(region, LOWER DIGITS "-")) {
        snprintf(errstr, n, "blob.s3-region %s: expected a region name such as us-east-1",
                 region);
        goto fail;
    }
    snprintf(s->region, sizeof s->region, "%s", region);
    if (o->endpoint && *o->endpoint)
        snprintf(s->endpoint, sizeof s->endpoint, "%s", o->endpoint);
    else
        snprintf(s->endpoint, sizeof s->endpoint, "https://s3.%s.amazonaws.com", s->region);
    size_t el = strlen(s->endpoint);
    while (el && s->endpoint[el - 1] == '/') s->endpoint[--el] = '\0';
    if ((strncmp(s->endpoint, "http://", 7) && strncmp(s->endpoint, "https://", 8)) ||
        strchr(s->endpoint + 8, '/') || strchr(s->endpoint, '?')) {
        snprintf(errstr, n, "blob.s3-endpoint %s: expected http(s)://HOST[:PORT]", s->endpoint);
        goto fail;
    }
    if (!o->access_key || !*o->access_key || !o->secret_key || !*o->secret_key) {
        snprintf(errstr, n, "blob store s3://%s: no credentials: set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, or blob.s3-credentials-file", s->bucket);
        goto fail;
    }
    if (strchr(o->access_key, ':') ||
        snprintf(s->userpwd, sizeof s->userpwd, "%s:%s", o->access_key, o->secret_key) >=
            (int)sizeof s->userpwd) {
        snprintf(errstr, n, "blob store s3://%s: malformed credentials", s->bucket);
        goto fail;
    }
    if (o->session_token && *o->session_token &&
        snprintf(s->token_hdr, sizeof s->token_hdr, "x-amz-security-token: %s",
                 o->session_token) >= (int)sizeof s->token_hdr) {
        snprintf(errstr, n, "blob store s3://%s: session token too long", s->bucket);
        goto fail;
    }
    snprintf(s->sigv4, sizeof s->sigv4, "aws:amz:%s:s3", s->region);
    s->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
    s->retries = o->retries >= 0 ? o->retries : 4;
    s->max_inflight = o->max_inflight > 0 ? o->max_inflight : 16;
    bs->be = &s3_backend;
    bs->self = s;
    snprintf(bs->where, sizeof bs->where, "s3://%s/%s at %s", s->bucket, s->prefix, s->endpoint);
    err = URSA_ERR_UNAVAILABLE;
    if (check_bucket(s, 1, errstr, n)) goto fail;
    err = URSA_ERR_NOMEM;
    if (!(s->multi = curl_multi_init())) goto fail;
    curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)s->max_inflight);
    if (pthread_create(&s->thr, NULL, uploader, s) != 0) {
        snprintf(errstr, n, "cannot start the uploader thread");
        goto fail;
    }
    s->thr_started = 1;
    return URSA_OK;
fail:
    bs->be = NULL;
    bs->self = NULL;
    destroy(s);
    return err;
}

/* ---- credentials ------------------------------------------------------------------ */

/* Copies v into buf at *off; NULL when it does not fit. */
static const char *keep(char *buf, size_t size, size_t *off, const char *v, size_t vl) {
    if (*off + vl + 1 > size) return NULL;
    char *d = buf + *off;
    memcpy(d, v, vl);
    d[vl] = '\0';
    *off += vl + 1;
    return d;
}

static void trim(char **s, size_t *l) {
    while (*l && (**s == ' ' || **s == '\t')) (*s)++, (*l)--;
    while (*l && ((*s)[*l - 1] == ' ' || (*s)[*l - 1] == '\t' || (*s)[*l - 1] == '\r' ||
                  (*s)[*l - 1] == '"' || (*s)[*l - 1] == '\''))
        (*l)--;
    if (*l && (**s == '"' || **s == '\'')) (*s)++, (*l)--;
}

ursa_err blob_s3_credentials(blob_s3_opts *o, const char *file, char *buf, size_t size,
                             char *errstr, size_t n) {
    size_t off = 0;
    const char *ak = getenv("AWS_ACCESS_KEY_ID"), *sk = getenv("AWS_SECRET_ACCESS_KEY"),
               *tk = getenv("AWS_SESSION_TOKEN");
    if (file && *file) {
        struct stat st;
        if (stat(file, &st) != 0) {
            snprintf(errstr, n, "blob.s3-credentials-file %s: %s", file, strerror(errno));
            return URSA_ERR_CONFIG;
        }
        if (st.st_mode & 077) {
            snprintf(errstr, n, "blob.s3-credentials-file %s: readable by others (mode %03o); "
                                "chmod 600 it", file, (unsigned)(st.st_mode & 0777));
            return URSA_ERR_CONFIG;
        }
        char *text = NULL;
        size_t tl = 0;
        if (util_read_file(file, 65536, &text, &tl) != URSA_OK) {
            snprintf(errstr, n, "blob.s3-credentials-file %s: cannot read it", file);
            return URSA_ERR_CONFIG;
        }
        ak = sk = tk = NULL;
        int in_default = 1; /* lines before any [section] count */
        for (char *line = text, *next; line && *line; line = next) {
            next = strchr(line, '\n');
            if (next) *next++ = '\0';
            size_t ll = strlen(line);
            trim(&line, &ll);
            line[ll] = '\0';
            if (line[0] == '[') {
                in_default = !strncmp(line, "[default]", 9);
                continue;
            }
            char *eq = strchr(line, '=');
            if (!in_default || line[0] == '#' || !eq) continue;
            char *name = line, *val = eq + 1;
            size_t nl = (size_t)(eq - line), vl = strlen(val);
            trim(&name, &nl);
            trim(&val, &vl);
            const char **slot = NULL;
            if (nl == 17 && !strncasecmp(name, "aws_access_key_id", nl)) slot = &ak;
            else if (nl == 21 && !strncasecmp(name, "aws_secret_access_key", nl)) slot = &sk;
            else if (nl == 17 && !strncasecmp(name, "aws_session_token", nl)) slot = &tk;
            if (slot && !(*slot = keep(buf, size, &off, val, vl))) {
                free(text);
                snprintf(errstr, n, "blob.s3-credentials-file %s: a value is too long", file);
                return URSA_ERR_CONFIG;
            }
        }
        free(text);
        if (!ak || !sk) {
            snprintf(errstr, n, "blob.s3-credentials-file %s: needs aws_access_key_id and "
                                "aws_secret_access_key", file);
            return URSA_ERR_CONFIG;
        }
    } else {
        /* copied, so a later unsetenv or setenv cannot pull them away */
        if (ak && !(ak = keep(buf, size, &off, ak, strlen(ak)))) goto too_long;
        if (sk && !(sk = keep(buf, size, &off, sk, strlen(sk)))) goto too_long;
        if (tk && !(tk = keep(buf, size, &off, tk, strlen(tk)))) goto too_long;
    }
    o->access_key = ak;
    o->secret_key = sk;
    o->session_token = tk;
    return URSA_OK;
too_long:
    snprintf(errstr, n, "AWS credentials in the environment are too long");
    return URSA_ERR_CONFIG;
}
