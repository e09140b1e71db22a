/* shares.c: what each client address holds of a resource the server
 * shares out (classify-url downloads in flight, bytes of the decode
 * budget), so that one address cannot take it all; see server.h. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

#define SHARE_BUCKETS 1024

typedef struct share {
    char client[48];
    uint64_t held;
    struct share *next;
} share;

struct shares {
    pthread_mutex_t mu;
    share *b[SHARE_BUCKETS];
};

shares *shares_new(void) {
    shares *sh = calloc(1, sizeof *sh);
    if (sh) pthread_mutex_init(&sh->mu, NULL);
    return sh;
}

void shares_free(shares *sh) {
    if (!sh) return;
    for (int i = 0; i < SHARE_BUCKETS; i++)
        while (sh->b[i]) {
            share *e = sh->b[i];
            sh->b[i] = e->next;
            free(e);
        }
    pthread_mutex_destroy(&sh->mu);
    free(sh);
}

static share **slot(shares *sh, const char *client) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = client; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
    share **e = &sh->b[h % SHARE_BUCKETS];
    while (*e && strcmp((*e)->client, client)) e = &(*e)->next;
    return e;
}

int shares_take(shares *sh, const char *client, uint64_t amount, uint64_t limit,
                uint64_t *held) {
    pthread_mutex_lock(&sh->mu);
    share **e = slot(sh, client);
    uint64_t now = *e ? (*e)->held : 0;
    if (held) *held = now;
    int ok = now == 0 || now + amount <= limit; /* alone, one item may be larger */
    if (ok && !*e) {
        share *n = calloc(1, sizeof *n);
        if (!n) {
            pthread_mutex_unlock(&sh->mu);
            return -1;
        }
        snprintf(n->client, sizeof n->client, "%s", client);
        *e = n;
    }
    if (ok) (*e)->held += amount;
    pthread_mutex_unlock(&sh->mu);
    return ok ? 0 : -1;
}

void shares_give(shares *sh, const char *client, uint64_t amount) {
    pthread_mutex_lock(&sh->mu);
    share **e = slot(sh, client);
    if (*e) {
        (*e)->held = (*e)->held > amount ? (*e)->held - amount : 0;
        if (!(*e)->held) { /* nothing held: forgotten, so the table stays small */
            share *gone = *e;
            *e = gone->next;
            free(gone);
        }
    }
    pthread_mutex_unlock(&sh->mu);
}
