/* resolve: see resolve.h. */
#include "resolve.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "addrset.h"
#include "config.h"
#include "log.h"

#define RETRY_MS 5000 /* after a failed resolution */
#define HOSTS_PATH "/etc/hosts"
#define HOSTS_RECHECK_MS 60000 /* a name found in /etc/hosts is looked up again */

struct rname {
    char *host;
    struct addrset set; /* the last good answer */
    struct addrset scratch;
    bool resolved;  /* set holds a good answer */
    bool failing;   /* the last resolution failed (logged once) */
    bool truncated; /* the answer had more than ADDRSET_MAX (logged once) */
    bool used;      /* named by the newest config */
    bool dropped;   /* no config names it: freed when its query ends */
    bool querying;
    struct evdns_request *req;
    struct event *timer;
    struct rname *next;
};

static struct {
    struct event_base *base;
    struct evdns_base *dns;
    const struct config *cfg; /* the resolver's settings come from it */
    struct rname *names;
    struct rname *dropped; /* dropped with a query in flight (freed at its end) */
    void (*changed)(void *);
    void *arg;
    struct event *notify; /* runs changed once per turn of the loop */
    unsigned pending;     /* queries in flight */
    bool starting;        /* resolve_start waits: no notification */
} R;

static void name_free(struct rname *n)
{
    if (n->timer)
        event_free(n->timer);
    free(n->host);
    free(n);
}

static void query(struct rname *n);
static const struct addrset *known(const char *host);

static void arm(struct rname *n, int64_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    event_add(n->timer, &tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rname *n = arg;
    if (!n->querying)
        query(n);
}

static void on_notify(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (R.changed)
        R.changed(R.arg);
}

static void list_addrs(const struct addrset *s, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < s->n && used + 48 < size; i++) {
        char a[64];
        addrset_format(&s->a[i], a, sizeof(a));
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? " " : "", a);
    }
    if (s->n && used + 48 >= size)
        snprintf(buf + used, size - used, " ...");
}

static const char *why(int result, int count)
{
    if (result == DNS_ERR_NONE && count == 0)
        return "no address (no A record)";
    if (result == DNS_ERR_NOTEXIST)
        return "no such name (NXDOMAIN)";
    return evdns_err_to_string(result);
}

static void failed(struct rname *n, int result, int count)
{
    if (!n->failing) {
        char list[400];
        list_addrs(&n->set, list, sizeof(list));
        if (n->resolved)
            log_warn("dns: %s: %s; keeping its last %zu addresses (%s)", n->host,
                     why(result, count), n->set.n, list);
        else
            log_warn("dns: %s: %s; its servers have no address until it resolves", n->host,
                     why(result, count));
    }
    n->failing = true;
    arm(n, RETRY_MS);
}

/* n->scratch is n's new good answer: taken (logged and published when it
 * differs), and n asked again after ms. */
static void accept_set(struct rname *n, int64_t ms)
{
    struct addrset *s = &n->scratch;
    if (n->failing)
        log_info("dns: %s resolves again", n->host);
    n->failing = false;
    if (!n->resolved || !addrset_equal(&n->set, s)) {
        char list[400];
        list_addrs(s, list, sizeof(list));
        size_t added = s->n, removed = 0;
        if (n->resolved)
            addrset_diff(&n->set, s, &added, &removed);
        log_info("dns: %s: %zu addresses (%zu new, %zu gone): %s", n->host, s->n, added, removed,
                 list);
        n->set = *s;
        n->resolved = true;
        if (!R.starting)
            event_active(R.notify, EV_TIMEOUT, 0);
    }
    arm(n, ms);
}

/* host's IPv4 addresses in /etc/hosts into n->scratch (read each time: a
 * small local file, on the main thread). False when it names none. */
static bool from_hosts(struct rname *n)
{
    FILE *f = fopen(HOSTS_PATH, "re");
    if (!f)
        return false;
    addrset_clear(&n->scratch);
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "#\n")] = '\0';
        char *save = NULL, *ip = strtok_r(line, " \t", &save);
        struct in_addr a;
        if (!ip || inet_pton(AF_INET, ip, &a) != 1)
            continue;
        for (char *name; (name = strtok_r(NULL, " \t", &save));)
            if (strcasecmp(name, n->host) == 0)
                addrset_add(&n->scratch, 4, &a);
    }
    fclose(f);
    return n->scratch.n > 0;
}

static void on_answer(int result, char type, int count, int ttl, void *addresses, void *arg)
{
    struct rname *n = arg;
    n->querying = false;
    n->req = NULL;
    R.pending--;
    if (n->dropped) {
        struct rname **p = &R.dropped;
        while (*p && *p != n)
            p = &(*p)->next;
        if (*p)
            *p = n->next;
        name_free(n);
        return;
    }
    if (result == DNS_ERR_CANCEL || result == DNS_ERR_SHUTDOWN)
        return;
    if (result != DNS_ERR_NONE || type != DNS_IPv4_A || count <= 0) {
        failed(n, result, count);
        return;
    }
    struct addrset *s = &n->scratch;
    addrset_clear(s);
    bool whole = true;
    for (int i = 0; i < count; i++)
        whole &= addrset_add(s, 4, (const uint8_t *)addresses + 4 * i);
    if (!whole && !n->truncated)
        log_warn("dns: %s: %d addresses; only the lowest %d are used", n->host, count, ADDRSET_MAX);
    n->truncated = !whole;
    accept_set(n, addrset_ttl_ms(ttl));
}

static void query(struct rname *n)
{
    if (from_hosts(n)) { /* as the C library does: files before DNS */
        accept_set(n, HOSTS_RECHECK_MS);
        return;
    }
    n->querying = true;
    R.pending++;
    struct evdns_request *req = evdns_base_resolve_ipv4(R.dns, n->host, 0, on_answer, n);
    if (n->querying)
        n->req = req; /* not already answered (synchronously) */
    if (!req && n->querying) {
        n->querying = false;
        R.pending--;
        failed(n, DNS_ERR_UNKNOWN, 0);
    }
}

/* The evdns base with the config's nameservers (or resolv.conf's). */
static int dns_new(const struct config *cfg)
{
    R.dns = evdns_base_new(R.base, 0);
    if (!R.dns)
        return -1;
    if (cfg->nresolvers) {
        for (size_t i = 0; i < cfg->nresolvers; i++)
            if (evdns_base_nameserver_sockaddr_add(R.dns,
                                                   (const struct sockaddr *)&cfg->resolvers[i].sa,
                                                   cfg->resolvers[i].salen, 0) != 0)
                log_warn("dns: cannot use nameserver %s", cfg->resolvers[i].text);
    } else {
        int r = evdns_base_resolv_conf_parse(R.dns, DNS_OPTIONS_ALL, "/etc/resolv.conf");
        if (r != 0)
            log_warn("dns: /etc/resolv.conf: cannot read it (error %d); asking 127.0.0.1", r);
    }
    evdns_base_set_option(R.dns, "timeout:", "2");
    evdns_base_set_option(R.dns, "attempts:", "2");
    return 0;
}

/* Finds or adds the names of cfg's servers, marking them used; new ones
 * are asked now. Returns -1 when out of memory. */
static int collect(const struct config *cfg)
{
    for (struct rname *n = R.names; n; n = n->next)
        n->used = false;
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        const struct config_upstream *up = &cfg->upstreams[u];
        for (size_t i = 0; i < up->nservers; i++) {
            const struct config_addr *a = &up->servers[i].addr;
            if (a->numeric && !up->servers[i].written)
                continue; /* an IP as written (an expanded name keeps its host) */
            struct rname *n = R.names;
            while (n && strcmp(n->host, a->host) != 0)
                n = n->next;
            if (n) {
                n->used = true;
                continue;
            }
            if (!R.dns && dns_new(cfg) != 0)
                return -1;
            n = calloc(1, sizeof(*n));
            if (!n || !(n->host = strdup(a->host)) ||
                !(n->timer = evtimer_new(R.base, on_timer, n))) {
                if (n)
                    free(n->host);
                free(n);
                return -1;
            }
            n->used = true;
            n->next = R.names;
            R.names = n;
            query(n);
        }
    }
    /* names no config uses: dropped (a query in flight is cancelled first) */
    for (struct rname **p = &R.names; *p;) {
        struct rname *n = *p;
        if (n->used) {
            p = &n->next;
            continue;
        }
        *p = n->next;
        if (n->querying) {
            n->dropped = true;
            n->next = R.dropped;
            R.dropped = n;
            event_del(n->timer);
            evdns_cancel_request(R.dns, n->req);
        } else {
            name_free(n);
        }
    }
    return 0;
}

int resolve_start(struct event_base *base, const struct config *cfg, void (*changed)(void *),
                  void *arg)
{
    R.base = base;
    R.changed = changed;
    R.arg = arg;
    if (!(R.notify = event_new(base, -1, 0, on_notify, NULL))) {
        log_error("dns: out of memory");
        return -1;
    }
    R.starting = true;
    int rc = collect(cfg);
    while (rc == 0 && R.pending && event_base_loop(base, EVLOOP_ONCE) == 0)
        ;
    R.starting = false;
    if (rc != 0)
        log_error("dns: out of memory");
    /* where each name that did not resolve is written */
    for (size_t u = 0; rc == 0 && u < cfg->nupstreams; u++) {
        const struct config_upstream *up = &cfg->upstreams[u];
        for (size_t i = 0; i < up->nservers; i++) {
            const struct config_server *s = &up->servers[i];
            if (!s->addr.numeric && !known(s->addr.host))
                log_warn("%s:%u:%u: upstreams.%s.servers[%zu].address: warning: %s does not "
                         "resolve; the upstream has no server of it until it does",
                         cfg->path, s->line, s->col, up->name, i, s->addr.host);
        }
    }
    return rc;
}

void resolve_names(const struct config *cfg)
{
    if (R.base && collect(cfg) != 0)
        log_error("dns: out of memory: some names are not resolved");
}

void resolve_update(struct config *cfg)
{
    if (R.base && collect(cfg) != 0)
        log_error("dns: out of memory: some names are not resolved");
    resolve_expand(cfg);
}

/* The known addresses of host, NULL when it has none yet. */
static const struct addrset *known(const char *host)
{
    for (struct rname *n = R.names; n; n = n->next)
        if (strcmp(n->host, host) == 0)
            return n->resolved && n->set.n ? &n->set : NULL;
    return NULL;
}

/* One server per address of its name (or as written while it has none). */
static void expand_upstream(struct config *cfg, struct config_upstream *up)
{
    size_t count = 0, bytes = 0;
    for (size_t i = 0; i < up->nservers; i++) {
        const struct config_server *s = &up->servers[i];
        const struct addrset *set = s->addr.numeric ? NULL : known(s->addr.host);
        count += set ? set->n : 1;
        up->unresolved |= !set && !s->addr.numeric;
        bytes += set ? set->n * (strlen(s->addr.text) + 48) : 0;
    }
    if (count == up->nservers && !bytes)
        return;
    size_t head = (sizeof(void *) + _Alignof(struct config_server) - 1) /
                  _Alignof(struct config_server) * _Alignof(struct config_server);
    char *block = malloc(head + count * sizeof(struct config_server) + bytes);
    if (!block) {
        fprintf(stderr, "ferry: out of memory\n");
        abort();
    }
    *(void **)block = cfg->resolved_;
    cfg->resolved_ = block;
    struct config_server *out = (struct config_server *)(block + head);
    char *str = (char *)(out + count);
    size_t k = 0;
    for (size_t i = 0; i < up->nservers; i++) {
        const struct config_server *s = &up->servers[i];
        const struct addrset *set = s->addr.numeric ? NULL : known(s->addr.host);
        if (!set) {
            out[k] = *s;
            out[k].index = (uint32_t)k;
            k++;
            continue;
        }
        for (size_t j = 0; j < set->n; j++, k++) {
            struct config_server *d = &out[k];
            *d = *s;
            d->index = (uint32_t)k;
            d->written = s->addr.text;
            char ip[64];
            addrset_format(&set->a[j], ip, sizeof(ip));
            size_t len =
                (size_t)snprintf(str, strlen(s->addr.text) + 48, "%s@%s", s->addr.text, ip);
            d->addr.text = str;
            str += len + 1;
            memset(&d->addr.sa, 0, sizeof(d->addr.sa));
            struct sockaddr_in *in = (struct sockaddr_in *)&d->addr.sa;
            in->sin_family = AF_INET;
            in->sin_port = htons(s->addr.port);
            memcpy(&in->sin_addr, set->a[j].bytes, 4);
            d->addr.salen = sizeof(*in);
            d->addr.numeric = true;
        }
    }
    up->servers = out;
    up->nservers = count;
}

void resolve_expand(struct config *cfg)
{
    if (!R.names)
        return;
    for (size_t u = 0; u < cfg->nupstreams; u++)
        expand_upstream(cfg, &cfg->upstreams[u]);
}

void resolve_stop(void)
{
    for (struct rname *n = R.names, *next; n; n = next) {
        next = n->next;
        name_free(n);
    }
    R.names = NULL;
    for (struct rname *n = R.dropped, *next; n; n = next) {
        next = n->next;
        name_free(n);
    }
    R.dropped = NULL;
    if (R.dns)
        evdns_base_free(R.dns, 0); /* pending queries go without their callbacks */
    R.dns = NULL;
    if (R.notify)
        event_free(R.notify);
    R.notify = NULL;
    R.base = NULL;
}
