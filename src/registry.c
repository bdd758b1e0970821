/* registry: see registry.h. */
#include "registry.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct registry_server *servers;
static struct registry_upstream *upstreams;
static unsigned ndrained; /* atomic */

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

struct registry_server *registry_server(const char *upstream, const char *address)
{
    pthread_mutex_lock(&lock);
    struct registry_server *s = find(upstream, address);
    if (s)
        goto out_unlock;
    size_t nlen = strlen(upstream), alen = strlen(address), klen = nlen + 1 + alen;
    struct registry_upstream *u = upstream_get(upstream);
    s = u ? aligned_alloc(64, (sizeof(*s) + 63) & ~(size_t)63) : NULL;
    if (!s)
        goto out_unlock;
    memset(s, 0, sizeof(*s));
    if (!(s->key = malloc(klen + 1))) {
        free(s);
        s = NULL;
        goto out_unlock;
    }
    memcpy(s->key, upstream, nlen + 1);
    memcpy(s->key + nlen + 1, address, alen + 1);
    s->key_len = klen;
    s->up = u;
    s->next = servers;
    servers = s;
out_unlock:
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

bool registry_drained(const struct registry_server *s)
{
    return s && REGISTRY_LOAD(&s->drained);
}

bool registry_any_drained(void)
{
    return REGISTRY_LOAD(&ndrained) != 0;
}

int registry_set_drained(const char *upstream, const char *address, bool drained)
{
    struct registry_server *s = registry_server(upstream, address);
    if (!s)
        return -ENOMEM;
    pthread_mutex_lock(&lock);
    if (s->drained != drained) {
        REGISTRY_STORE(&s->drained, drained);
        if (drained)
            REGISTRY_ADD(&ndrained, 1);
        else
            REGISTRY_SUB(&ndrained, 1);
    }
    pthread_mutex_unlock(&lock);
    return 0;
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
    pthread_mutex_unlock(&lock);
}
