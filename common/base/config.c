/* config.c: the layered settings table (see config.h). Values are kept as
 * validated strings and converted on read, so the help can show them as set. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

extern char **environ;

const cfg_def cfg_defs_base[] = {
    {"log.level", CFG_STR, "info", 1, 0, "error, warn, info or debug"},
    {"state-dir", CFG_STR, ".ursa", 1, 0,
     "state directory (blobs, pid files, logs, addresses of the embedded stack)"},
    {NULL, 0, NULL, 0, 0, NULL}};

const cfg_def cfg_defs_kafka[] = {
    {"kafka.bootstrap", CFG_STR, "", 1, 0,
     "Kafka bootstrap servers host:port[,...]; empty: read <state-dir>/broker.bootstrap"},
    {"kq.max-attempts", CFG_INT, "5", 1, 100,
     "attempts for a message that fails transiently before it is dead-lettered"},
    {"kq.backoff-ms", CFG_INT, "100", 1, 60000,
     "first retry delay; doubles each attempt"},
    {"kq.backoff-max-ms", CFG_INT, "5000", 1, 600000, "longest retry delay"},
    {"kq.max-inflight", CFG_INT, "1000", 1, 1000000,
     "consumed messages whose effects may be pending at once (finished ones waiting "
     "behind a slower one for their offset may be 16 times as many)"},
    {"kq.max-message-bytes", CFG_INT, "1000000", 1024, 100000000,
     "a consumed message bigger than this is dead-lettered (as a summary) unread"},
    {"kq.drain-ms", CFG_INT, "5000", 0, 600000,
     "on stop, how long to wait for the effects of messages in progress"},
    {"kq.flush-ms", CFG_INT, "3000", 0, 600000,
     "on stop, how long to wait for the broker to acknowledge what was produced"},
    {NULL, 0, NULL, 0, 0, NULL}};

const cfg_def cfg_defs_redis[] = {
    {"redis.url", CFG_STR, "", 1, 0,
     "redis://[[user]:password@]host:port[,host:port...][/db]; empty: the stack's own "
     "(<state-dir>/redis.port and redis.password)"},
    {"redis.password-file", CFG_STR, "", 1, 0,
     "a file holding the password (AUTH) for a redis.url without one; never on a command line"},
    {"redis.timeout-ms", CFG_INT, "2000", 10, 600000,
     "connect and command timeout"},
    {NULL, 0, NULL, 0, 0, NULL}};

typedef struct {
    const cfg_def *def;
    char *value; /* NULL when unset */
    int given;   /* set by a file, the environment or a flag: not the default */
    int table;   /* the index of the table it came from */
} cfg_entry;

typedef struct {
    char *name, *value;
} cfg_pair;

struct cfg {
    cfg_entry *e;
    size_t n;
    char *prefix;
    char *own; /* the program's own prefix, which flags may drop */
    cfg_pair *pt;
    size_t npt, cappt;
};

static void set_err(char *errstr, size_t n, const char *fmt, const char *a,
                    const char *b) {
    if (errstr && n) snprintf(errstr, n, fmt, a, b);
}

cfg *cfg_new(const cfg_def *const *tables, const char *prefix) {
    cfg *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    size_t n = 0;
    for (size_t t = 0; tables[t]; t++)
        for (const cfg_def *d = tables[t]; d->name; d++) n++;
    c->e = calloc(n ? n : 1, sizeof *c->e);
    if (!c->e) goto fail;
    for (size_t t = 0; tables[t]; t++)
        for (const cfg_def *d = tables[t]; d->name; d++) {
            c->e[c->n].def = d;
            c->e[c->n].table = (int)t;
            if (d->def && !(c->e[c->n].value = strdup(d->def))) goto fail;
            c->n++;
        }
    if (prefix && !(c->prefix = strdup(prefix))) goto fail;
    return c;
fail:
    cfg_destroy(c);
    return NULL;
}

void cfg_destroy(cfg *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) free(c->e[i].value);
    for (size_t i = 0; i < c->npt; i++) {
        free(c->pt[i].name);
        free(c->pt[i].value);
    }
    free(c->pt);
    free(c->e);
    free(c->prefix);
    free(c->own);
    free(c);
}

static cfg_entry *find(const cfg *c, const char *name) {
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->e[i].def->name, name) == 0) return &c->e[i];
    return NULL;
}

ursa_err cfg_set_own_prefix(cfg *c, const char *prefix) {
    char *p = prefix ? strdup(prefix) : NULL;
    if (prefix && !p) return URSA_ERR_NOMEM;
    free(c->own);
    c->own = p;
    return URSA_OK;
}

static ursa_err check_value(const cfg_def *d, const char *v, char *errstr,
                            size_t n) {
    char *end;
    char buf[256];
    switch (d->type) {
    case CFG_STR: return URSA_OK;
    case CFG_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "false") || !strcmp(v, "1") ||
            !strcmp(v, "0") || !strcmp(v, "yes") || !strcmp(v, "no"))
            return URSA_OK;
        set_err(errstr, n, "%s: expected true or false, got \"%s\"", d->name, v);
        return URSA_ERR_CONFIG;
    case CFG_INT:
    case CFG_DOUBLE: {
        errno = 0;
        double x = d->type == CFG_INT ? (double)strtoll(v, &end, 10)
                                      : strtod(v, &end);
        if (errno || end == v || *end) {
            set_err(errstr, n, "%s: expected a number, got \"%s\"", d->name, v);
            return URSA_ERR_CONFIG;
        }
        if (d->min <= d->max && (x < d->min || x > d->max)) {
            snprintf(buf, sizeof buf, "%g..%g", d->min, d->max);
            if (errstr && n)
                snprintf(errstr, n, "%s: %s is outside %s", d->name, v, buf);
            return URSA_ERR_CONFIG;
        }
        return URSA_OK;
    }
    }
    return URSA_ERR_CONFIG;
}

static ursa_err set_passthrough(cfg *c, const char *name, const char *value) {
    for (size_t i = 0; i < c->npt; i++)
        if (strcmp(c->pt[i].name, name) == 0) {
            char *v = strdup(value);
            if (!v) return URSA_ERR_NOMEM;
            free(c->pt[i].value);
            c->pt[i].value = v;
            return URSA_OK;
        }
    if (c->npt == c->cappt) {
        size_t cap = c->cappt ? c->cappt * 2 : 8;
        cfg_pair *p = realloc(c->pt, cap * sizeof *p);
        if (!p) return URSA_ERR_NOMEM;
        c->pt = p;
        c->cappt = cap;
    }
    c->pt[c->npt].name = strdup(name);
    c->pt[c->npt].value = strdup(value);
    if (!c->pt[c->npt].name || !c->pt[c->npt].value) {
        free(c->pt[c->npt].name);
        free(c->pt[c->npt].value);
        return URSA_ERR_NOMEM;
    }
    c->npt++;
    return URSA_OK;
}

ursa_err cfg_set(cfg *c, const char *name, const char *value, char *errstr,
                 size_t n) {
    cfg_entry *e = find(c, name);
    if (!e) {
        if (c->prefix && strncmp(name, c->prefix, strlen(c->prefix)) == 0 &&
            name[strlen(c->prefix)])
            return set_passthrough(c, name, value);
        set_err(errstr, n, "unknown setting \"%s\"%s", name,
                " (see --help)");
        return URSA_ERR_CONFIG;
    }
    ursa_err err = check_value(e->def, value, errstr, n);
    if (err) return err;
    char *v = strdup(value);
    if (!v) return URSA_ERR_NOMEM;
    free(e->value);
    e->value = v;
    e->given = 1;
    return URSA_OK;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t l = strlen(s);
    while (l && isspace((unsigned char)s[l - 1])) s[--l] = '\0';
    return s;
}

/* 1 when some setting of c starts with name's section ("inference." of
 * "inference.port"): a name there that c does not know is a typo, not
 * another program's setting. */
static int own_section(const cfg *c, const char *name) {
    const char *dot = strchr(name, '.');
    if (!dot) return 1;
    size_t l = (size_t)(dot - name) + 1;
    for (size_t i = 0; i < c->n; i++)
        if (!strncmp(c->e[i].def->name, name, l)) return 1;
    return c->prefix && !strncmp(name, c->prefix, strlen(c->prefix));
}

/* The value part of a file line, in place: a '#' at the start or after a
 * space begins a comment unless it is inside quotes; a value wholly in
 * double quotes (with \" and \\ inside) or single quotes is taken without
 * them. NULL for a quote left open. */
static char *file_value(char *s) {
    s = trim(s);
    char q = 0;
    for (char *p = s; *p; p++) {
        if (q) {
            if (q == '"' && *p == '\\' && p[1]) p++;
            else if (*p == q) q = 0;
        } else if (*p == '"' || *p == '\'') {
            if (p == s) q = *p;
        } else if (*p == '#' && (p == s || isspace((unsigned char)p[-1]))) {
            *p = '\0';
            break;
        }
    }
    if (q) return NULL;
    s = trim(s);
    size_t l = strlen(s);
    if (l >= 2 && (s[0] == '"' || s[0] == '\'') && s[l - 1] == s[0]) {
        char quote = s[0], *w = s;
        for (char *r = s + 1; r < s + l - 1; r++) {
            if (quote == '"' && *r == '\\' && r + 1 < s + l - 1) r++;
            *w++ = *r;
        }
        *w = '\0';
    }
    return s;
}

ursa_err cfg_load_file(cfg *c, const char *path, char *errstr, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f) {
        set_err(errstr, n, "config file %s: %s", path, strerror(errno));
        return URSA_ERR_CONFIG;
    }
    char line[4096];
    int lineno = 0;
    ursa_err err = URSA_OK;
    while (!err && fgets(line, sizeof line, f)) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        char *eq = strchr(s, '=');
        char *value = eq ? (*eq = '\0', file_value(eq + 1)) : NULL;
        if (!eq || !value) {
            if (errstr && n)
                snprintf(errstr, n, "config file %s:%d: %s", path, lineno,
                         eq ? "a quote left open" : "expected name = value");
            err = URSA_ERR_CONFIG;
            break;
        }
        char *name = trim(s);
        if (!find(c, name) && !own_section(c, name)) {
            /* another program's setting: one file serves every daemon */
            ULOG_DEBUG("event=config_ignored file=%s line=%d name=%s note=\"not a setting of "
                       "this program\"", path, lineno, name);
            continue;
        }
        char msg[512];
        err = cfg_set(c, name, value, msg, sizeof msg);
        if (err && errstr && n)
            snprintf(errstr, n, "config file %s:%d: %s", path, lineno, msg);
    }
    fclose(f);
    return err;
}

/* "kafka.bootstrap" -> "URSA_KAFKA_BOOTSTRAP" */
static void env_name(const char *name, char *out, size_t n) {
    size_t o = (size_t)snprintf(out, n, "URSA_");
    for (; *name && o + 1 < n; name++)
        out[o++] = (*name == '.' || *name == '-') ? '_'
                                                  : (char)toupper((unsigned char)*name);
    out[o] = '\0';
}

static ursa_err load_env(cfg *c, char *errstr, size_t n) {
    char envn[256], msg[512];
    for (size_t i = 0; i < c->n; i++) {
        env_name(c->e[i].def->name, envn, sizeof envn);
        const char *v = getenv(envn);
        if (!v) continue;
        ursa_err err = cfg_set(c, c->e[i].def->name, v, msg, sizeof msg);
        if (err) {
            if (errstr && n) snprintf(errstr, n, "$%s: %s", envn, msg);
            return err;
        }
    }
    if (!c->prefix) return URSA_OK;
    char pfx[256];
    env_name(c->prefix, pfx, sizeof pfx); /* "URSA_KAFKA_" */
    size_t pl = strlen(pfx);
    for (char **ep = environ; ep && *ep; ep++) {
        if (strncmp(*ep, pfx, pl) != 0) continue;
        const char *eq = strchr(*ep, '=');
        if (!eq || (size_t)(eq - *ep) <= pl) continue;
        char name[256];
        size_t o = (size_t)snprintf(name, sizeof name, "%s", c->prefix);
        for (const char *p = *ep + pl; p < eq && o + 1 < sizeof name; p++)
            name[o++] = *p == '_' ? '.' : (char)tolower((unsigned char)*p);
        name[o] = '\0';
        int known = 0;
        for (size_t i = 0; i < c->n && !known; i++) {
            env_name(c->e[i].def->name, envn, sizeof envn);
            known = strncmp(envn, *ep, (size_t)(eq - *ep)) == 0 &&
                    envn[eq - *ep] == '\0';
        }
        if (known) continue;
        ursa_err err = set_passthrough(c, name, eq + 1);
        if (err) return err;
    }
    return URSA_OK;
}

/* Edit distance of a and b, capped at 99 (names are short). */
static int distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return 99;
    int d[65][65];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
    return d[la][lb];
}

/* "unknown flag --bogus", with the nearest setting if one is near. */
static void unknown_flag(const cfg *c, const char *name, char *errstr, size_t n) {
    const char *best = NULL;
    int bd = 99;
    for (size_t i = 0; i < c->n; i++) {
        const char *dn = c->e[i].def->name;
        size_t ol = c->own ? strlen(c->own) : 0;
        const char *shortn = ol && !strncmp(dn, c->own, ol) ? dn + ol : dn;
        int d1 = distance(name, dn), d2 = distance(name, shortn);
        int d = d1 < d2 ? d1 : d2;
        if (d < bd) bd = d, best = d2 < d1 ? shortn : dn;
    }
    size_t l = strlen(name);
    if (best && bd <= (l > 9 ? (int)l / 3 : 2))
        snprintf(errstr, n, "unknown flag --%s (did you mean --%s?)", name, best);
    else
        snprintf(errstr, n, "unknown flag --%s (see --help)", name);
}

ursa_err cfg_load(cfg *c, int argc, char **argv, int *argi, int *want_help,
                  char *errstr, size_t n) {
    ursa_err err;
    if (want_help) *want_help = 0;
    /* The file layer comes first, so find --config before anything else. */
    const char *file = getenv("URSA_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0 || strncmp(argv[i], "--", 2) != 0) break;
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) file = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0) file = argv[i] + 9;
    }
    if (file && *file && (err = cfg_load_file(c, file, errstr, n))) return err;
    if ((err = load_env(c, errstr, n))) return err;

    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            if (want_help) *want_help = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') break;
        char name[256];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (nl >= sizeof name) nl = sizeof name - 1;
        memcpy(name, a + 2, nl);
        name[nl] = '\0';
        if (eq) val = eq + 1;
        if (strcmp(name, "config") == 0) {
            if (!val) i++;
            continue;
        }
        cfg_entry *e = find(c, name);
        char full[320];
        if (!e && c->own && snprintf(full, sizeof full, "%s%s", c->own, name) < (int)sizeof full &&
            (e = find(c, full)))
            snprintf(name, sizeof name, "%s", e->def->name); /* --port: --<own>port */
        if (!e && !(c->prefix && !strncmp(name, c->prefix, strlen(c->prefix)) &&
                    name[strlen(c->prefix)])) {
            if (errstr && n) unknown_flag(c, name, errstr, n);
            return URSA_ERR_CONFIG;
        }
        if (!val) {
            if (e && e->def->type == CFG_BOOL) val = "true";
            else if (i + 1 < argc) val = argv[++i];
            else {
                set_err(errstr, n, "--%s needs a value%s", name, "");
                return URSA_ERR_CONFIG;
            }
        }
        if ((err = cfg_set(c, name, val, errstr, n))) return err;
    }
    if (argi) *argi = i;
    return URSA_OK;
}

int cfg_is_bool(const cfg *c, const char *name) {
    cfg_entry *e = find(c, name);
    return e && e->def->type == CFG_BOOL;
}

const char *cfg_str(const cfg *c, const char *name) {
    cfg_entry *e = find(c, name);
    return e && e->value ? e->value : "";
}

int cfg_given(const cfg *c, const char *name) {
    cfg_entry *e = find(c, name);
    return e && e->given;
}

long long cfg_int(const cfg *c, const char *name) {
    return strtoll(cfg_str(c, name), NULL, 10);
}

double cfg_double(const cfg *c, const char *name) {
    return strtod(cfg_str(c, name), NULL);
}

int cfg_bool(const cfg *c, const char *name) {
    const char *v = cfg_str(c, name);
    return !strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes");
}

size_t cfg_passthrough_count(const cfg *c) { return c->npt; }

void cfg_passthrough_get(const cfg *c, size_t i, const char **name,
                         const char **value) {
    *name = c->pt[i].name;
    *value = c->pt[i].value;
}

/* 1 for a setting of the program itself: under its own prefix
 * (inference.*), or, with none set, from the last table (a command's). */
static int own_entry(const cfg *c, size_t i) {
    if (c->own) return !strncmp(c->e[i].def->name, c->own, strlen(c->own));
    return c->n && c->e[i].table == c->e[c->n - 1].table;
}

static void print_entry(const cfg_def *d, FILE *out) {
    static const char *types[] = {"STR", "INT", "BOOL", "NUM"};
    char envn[256];
    env_name(d->name, envn, sizeof envn);
    fprintf(out, "  --%s %s\n      %s", d->name, types[d->type], d->help);
    if (d->def && *d->def) fprintf(out, " [default: %s]", d->def);
    fprintf(out, " [env: %s]\n", envn);
}

void cfg_print_help(const cfg *c, FILE *out) {
    char envn[256];
    fprintf(out, "Settings (default < --config FILE < environment < flag).\n");
    int any = 0;
    for (size_t i = 0; i < c->n; i++)
        if (own_entry(c, i)) {
            if (!any++) fprintf(out, "Its own:\n");
            print_entry(c->e[i].def, out);
        }
    /* the shared ones by section (redis.*, kafka.*, ...), in table order */
    const char *printed_sec[64];
    size_t nsec = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (own_entry(c, i)) continue;
        const char *name = c->e[i].def->name, *dot = strchr(name, '.');
        size_t l = dot ? (size_t)(dot - name) : 0;
        int seen = 0;
        for (size_t k = 0; k < nsec && !seen; k++)
            seen = l ? !strncmp(printed_sec[k], name, l + 1) : !strchr(printed_sec[k], '.');
        if (seen) continue;
        if (nsec < 64) printed_sec[nsec++] = name;
        if (l) fprintf(out, "Shared, %.*s.*:\n", (int)l, name);
        else fprintf(out, "Shared:\n");
        for (size_t k = i; k < c->n; k++) {
            const char *n2 = c->e[k].def->name, *d2 = strchr(n2, '.');
            if (own_entry(c, k)) continue;
            if (l ? (d2 && (size_t)(d2 - n2) == l && !strncmp(n2, name, l)) : !d2)
                print_entry(c->e[k].def, out);
        }
    }
    if (c->prefix) {
        env_name(c->prefix, envn, sizeof envn);
        fprintf(out, "  --%sNAME VALUE\n      passed straight to the library "
                     "behind it [env: %sNAME, '_' for '.']\n",
                c->prefix, envn);
    }
}
