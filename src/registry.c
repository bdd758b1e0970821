/* registry: see registry.h. */
#include "registry.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct registry_server *servers;
static struct registry_upstream *upstreams;
static unsigned ndrained; /* atomic */
static size_t nservers;   /* atomic: entries alive */
static unsigned epoch;    /* bumped by registry_free: older holds are void */

/* Under lock. */
static struct registry_upstream *upstream_get(const char *name)
{
    for (struct registry_upstream *u = upstreams; u; u = u->next)
        if (strcmp(u->name, name) == 0)
            return u;
    struct registry_upstream *u = calloc(1, sizeof(*u));
    if (!u || !(u->name = strdup(name))) {
        free(u);
        return NULL;
    }
    pthread_mutex_init(&u->lock, NULL);
    u->next = upstreams;
    upstreams = u;
    return u;
}

/* Under lock. */
static struct registry_server *find(const char *upstream, const char *address)
{
    size_t nlen = strlen(upstream), alen = strlen(address), klen = nlen + 1 + alen;
    for (struct registry_server *s = servers; s; s = s->next)
        if (s->key_len == klen && memcmp(s->key, upstream, nlen + 1) == 0 &&
            memcmp(s->key + nlen + 1, address, alen) == 0)
            return s;
    return NULL;
}

/* Under lock: the entry, created when new; NULL when out of memory. */
static struct registry_server *get(const char *upstream, const char *address)
{
    struct registry_server *s = find(upstream, address);
    if (s)
        return s;
    size_t nlen = strlen(upstream), alen = strlen(address), klen = nlen + 1 + alen;
    struct registry_upstream *u = upstream_get(upstream);
    s = u ? aligned_alloc(64, (sizeof(*s) + 63) & ~(size_t)63) : NULL;
    if (!s)
        return NULL;
    memset(s, 0, sizeof(*s));
    if (!(s->key = malloc(klen + 1))) {
        free(s);
        return NULL;
    }
    memcpy(s->key, upstream, nlen + 1);
    memcpy(s->key + nlen + 1, address, alen + 1);
    s->key_len = klen;
    s->up = u;
    s->next = servers;
    servers = s;
    REGISTRY_ADD(&nservers, 1);
    return s;
}

struct registry_server *registry_server(const char *upstream, const char *address)
{
    pthread_mutex_lock(&lock);
    struct registry_server *s = get(upstream, address);
    pthread_mutex_unlock(&lock);
    return s;
}

struct registry_server *registry_server_find(const char *upstream, const char *address)
{
    pthread_mutex_lock(&lock);
    struct registry_server *s = find(upstream, address);
    pthread_mutex_unlock(&lock);
    return s;
}

/* Under lock: unlinks s and frees it. */
static void server_free(struct registry_server *s)
{
    for (struct registry_server **p = &servers; *p; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            break;
        }
    }
    REGISTRY_SUB(&nservers, 1);
    free(s->key);
    free(s);
}

struct registry_server *registry_hold(const char *upstream, const char *address)
{
    pthread_mutex_lock(&lock);
    struct registry_server *s = get(upstream, address);
    if (s) {
        s->holds++;
        s->held = true;
    }
    pthread_mutex_unlock(&lock);
    return s;
}

void registry_release(struct registry_server *s, unsigned held_epoch)
{
    pthread_mutex_lock(&lock);
    if (held_epoch == epoch && --s->holds == 0 && !s->drained)
        server_free(s);
    pthread_mutex_unlock(&lock);
}

unsigned registry_epoch(void)
{
    pthread_mutex_lock(&lock);
    unsigned e = epoch;
    pthread_mutex_unlock(&lock);
    return e;
}

size_t registry_count(void)
{
    return REGISTRY_LOAD(&nservers);
}

bool registry_drained(const struct registry_server *s)
{
    return s && REGISTRY_LOAD(&s->drained);
}

bool registry_drained_named(const char *upstream, const char *address)
{
    pthread_mutex_lock(&lock);
    struct registry_server *s = find(upstream, address);
    bool drained = s && REGISTRY_LOAD(&s->drained);
    pthread_mutex_unlock(&lock);
    return drained;
}

bool registry_any_drained(void)
{
    return REGISTRY_LOAD(&ndrained) != 0;
}

int registry_set_drained(const char *upstream, const char *address, bool drained)
{
    if (!drained) {
        pthread_mutex_lock(&lock);
        struct registry_server *s = find(upstream, address);
        if (s && s->drained) {
            REGISTRY_STORE(&s->drained, false);
            REGISTRY_SUB(&ndrained, 1);
            if (s->held && s->holds == 0)
                server_free(s); /* no config has it: only the drain kept it */
        }
        pthread_mutex_unlock(&lock);
        return 0;
    }
    pthread_mutex_lock(&lock);
    struct registry_server *s = get(upstream, address);
    if (s && !s->drained) {
        REGISTRY_STORE(&s->drained, true);
        REGISTRY_ADD(&ndrained, 1);
    }
    pthread_mutex_unlock(&lock);
    return s ? 0 : -ENOMEM;
}

void registry_health_reset(struct registry_server *s, bool down)
{
    REGISTRY_STORE(&s->health_passes, 0);
    REGISTRY_STORE(&s->health_fails, 0);
    REGISTRY_STORE(&s->checked, 0);
    REGISTRY_STORE(&s->down, down);
}

void registry_free(void)
{
    pthread_mutex_lock(&lock);
    while (servers) {
        struct registry_server *s = servers;
        servers = s->next;
        free(s->key);
        free(s);
    }
    while (upstreams) {
        struct registry_upstream *u = upstreams;
        upstreams = u->next;
        pthread_mutex_destroy(&u->lock);
        free(u->name);
        free(u);
    }
    ndrained = 0;
    nservers = 0;
    epoch++;
    pthread_mutex_unlock(&lock);
}
