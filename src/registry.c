/* registry: see registry.h. */
#include "registry.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct registry_server {
    char *key; /* "upstream" NUL "address" */
    size_t key_len;
    bool drained; /* atomic */
    struct registry_server *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct registry_server *servers;
static unsigned ndrained; /* atomic */

struct registry_server *registry_server(const char *upstream, const char *address)
{
    size_t nlen = strlen(upstream), alen = strlen(address), klen = nlen + 1 + alen;
    pthread_mutex_lock(&lock);
    struct registry_server *s;
    for (s = servers; s; s = s->next)
        if (s->key_len == klen && memcmp(s->key, upstream, nlen + 1) == 0 &&
            memcmp(s->key + nlen + 1, address, alen) == 0)
            break;
    if (!s && (s = calloc(1, sizeof(*s))) && (s->key = malloc(klen + 1))) {
        memcpy(s->key, upstream, nlen + 1);
        memcpy(s->key + nlen + 1, address, alen + 1);
        s->key_len = klen;
        s->next = servers;
        servers = s;
    } else if (s && !s->key) {
        free(s);
        s = NULL;
    }
    pthread_mutex_unlock(&lock);
    return s;
}

bool registry_drained(const struct registry_server *s)
{
    return s && __atomic_load_n(&s->drained, __ATOMIC_RELAXED);
}

bool registry_any_drained(void)
{
    return __atomic_load_n(&ndrained, __ATOMIC_RELAXED) != 0;
}

int registry_set_drained(const char *upstream, const char *address, bool drained)
{
    struct registry_server *s = registry_server(upstream, address);
    if (!s)
        return -ENOMEM;
    pthread_mutex_lock(&lock);
    if (s->drained != drained) {
        __atomic_store_n(&s->drained, drained, __ATOMIC_RELAXED);
        if (drained)
            __atomic_add_fetch(&ndrained, 1, __ATOMIC_RELAXED);
        else
            __atomic_sub_fetch(&ndrained, 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&lock);
    return 0;
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
    ndrained = 0;
    pthread_mutex_unlock(&lock);
}
