/* resolve: see resolve.h. */
#include "resolve.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "addrset.h"
#include "config.h"
#include "log.h"
#include "registry.h"

#define RETRY_MS 5000 /* after a failed resolution */
#define HOSTS_PATH "/etc/hosts"
#define HOSTS_RECHECK_MS 60000 /* a name found in /etc/hosts is looked up again */

struct rname;

/* One address family's lookups of a name: A ([0]) or AAAA ([1]). */
struct rfam {
    struct rname *n;
    int family; /* 4 or 6 */
    struct evdns_request *req;
    bool querying;
    bool good;          /* set holds an answer (empty: no record of the family) */
    bool failing;       /* failed while the other family answered (logged once) */
    bool truncated;     /* the answer had more than ADDRSET_MAX (logged once) */
    int result;         /* this round's: DNS_ERR_NONE (addresses), _NODATA (none) or why not */
    int64_t ttl_ms;     /* this round's TTL (addresses, or NODATA's negative one); -1: none */
    struct addrset set; /* its last good answer */
    struct addrset fresh;
};

struct rname {
    char *host;
    enum config_resolve want; /* the families asked */
    struct rfam fam[2];
    struct addrset set; /* the last good answer: the families' union */
    struct addrset scratch;
    bool resolved;   /* set holds a good answer */
    bool failing;    /* the last resolution failed (logged once) */
    bool used;       /* named by the newest config */
    bool dropped;    /* no config names it: freed when its queries end */
    bool launching;  /* query() is starting its lookups */
    bool link_local; /* a link-local address was skipped (logged once) */
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

static const char *const FAMILY_RR[2] = {"A", "AAAA"};
static const char *const FAMILY_NAME[2] = {"IPv4", "IPv6"};

static void name_free(struct rname *n)
{
    if (n->timer)
        event_free(n->timer);
    free(n->host);
    free(n);
}

/* Does n ask family i (0: A, 1: AAAA)? */
static bool asks(const struct rname *n, int i)
{
    return n->want == CONFIG_RESOLVE_ANY ||
           n->want == (i ? CONFIG_RESOLVE_IPV6 : CONFIG_RESOLVE_IPV4);
}

static bool querying(const struct rname *n)
{
    return n->fam[0].querying || n->fam[1].querying;
}

static void query(struct rname *n);
static const struct addrset *known(const char *host, enum config_resolve want);

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
    if (!querying(n))
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

static const char *why(const struct rname *n, int result)
{
    if (result == DNS_ERR_NODATA || result == DNS_ERR_NONE)
        return n->want == CONFIG_RESOLVE_ANY    ? "no address (no A or AAAA record)"
               : n->want == CONFIG_RESOLVE_IPV4 ? "no address (no A record)"
                                                : "no address (no AAAA record)";
    if (result == DNS_ERR_NOTEXIST)
        return "no such name (NXDOMAIN)";
    return evdns_err_to_string(result);
}

/* A link-local IPv6 address of n (fe80::/10, from DNS or /etc/hosts) is
 * not used: without the interface it is on (a scope id, which an address
 * record cannot carry) a connect fails (EINVAL) or would leave through an
 * interface nobody chose. Logged once per name. */
static void skip_link_local(struct rname *n, const uint8_t *bytes)
{
    if (n->link_local)
        return;
    n->link_local = true;
    char a[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, bytes, a, sizeof(a));
    log_warn("dns: %s: %s is link-local; not used (an address record carries no interface to "
             "reach it through)",
             n->host, a);
}

/* No usable answer: every set kept, n asked again in ms. */
static void failed(struct rname *n, int result, int64_t ms)
{
    if (!n->failing) {
        char list[400];
        list_addrs(&n->set, list, sizeof(list));
        if (n->resolved)
            log_warn("dns: %s: %s; keeping its last %zu addresses (%s)", n->host, why(n, result),
                     n->set.n, list);
        else
            log_warn("dns: %s: %s; its servers have no address until it resolves", n->host,
                     why(n, result));
    }
    n->failing = true;
    arm(n, ms);
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

/* The union of the families' sets into n->scratch: fresh answers where
 * given, else the last good ones. */
static void merge(struct rname *n, bool fresh)
{
    addrset_clear(&n->scratch);
    for (int i = 0; i < 2; i++) {
        const struct rfam *f = &n->fam[i];
        bool ok = fresh && (f->result == DNS_ERR_NONE || f->result == DNS_ERR_NODATA);
        const struct addrset *from = ok ? &f->fresh : f->good ? &f->set : NULL;
        for (size_t j = 0; asks(n, i) && from && j < from->n; j++)
            addrset_add(&n->scratch, from->a[j].family, from->a[j].bytes);
    }
}

/* host's addresses of the families asked in /etc/hosts into the
 * families' fresh sets (read each time: a small local file, on the main
 * thread). False when it lists none. */
static bool from_hosts(struct rname *n)
{
    FILE *f = fopen(HOSTS_PATH, "re");
    if (!f)
        return false;
    addrset_clear(&n->fam[0].fresh);
    addrset_clear(&n->fam[1].fresh);
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "#\n")] = '\0';
        char *save = NULL, *ip = strtok_r(line, " \t", &save);
        uint8_t a[16];
        int i = !ip                               ? -1
                : inet_pton(AF_INET, ip, a) == 1  ? 0
                : inet_pton(AF_INET6, ip, a) == 1 ? 1
                                                  : -1;
        if (i < 0 || !asks(n, i))
            continue;
        for (char *name; (name = strtok_r(NULL, " \t", &save));) {
            if (strcasecmp(name, n->host) != 0)
                continue;
            if (addrset_link_local(n->fam[i].family, a))
                skip_link_local(n, a); /* as if the line were not there */
            else
                addrset_add(&n->fam[i].fresh, n->fam[i].family, a);
        }
    }
    fclose(f);
    if (!n->fam[0].fresh.n && !n->fam[1].fresh.n)
        return false;
    for (int i = 0; i < 2; i++) {
        n->fam[i].result = n->fam[i].fresh.n ? DNS_ERR_NONE : DNS_ERR_NODATA;
        n->fam[i].set = n->fam[i].fresh;
        n->fam[i].good = true;
        n->fam[i].failing = false;
    }
    merge(n, true);
    return true;
}

/* Both families asked have answered (or failed): the name's new set is
 * the union of the answers, a failed family keeping its last good set (as
 * nginx keeps a name's last addresses on an error); asked again at the
 * shortest TTL of the answers, those with addresses and the NODATA ones
 * that carry a negative TTL (a family failing: within RETRY_MS). Every
 * family failing, or no address at all: failed(), asked again within
 * RETRY_MS, or at the shortest negative TTL when every family asked
 * answered NODATA with one. */
static void round_end(struct rname *n)
{
    bool answered = false;
    int64_t ms = ADDRSET_TTL_MAX_MS; /* the answers' shortest TTL */
    int64_t none_ms = INT64_MAX;     /* with no address: when to ask again */
    int bad = DNS_ERR_NODATA;
    /* NXDOMAIN for one family while the other has records: no record of
     * it (evdns ends a search list with the last domain's NXDOMAIN) */
    bool exists = (asks(n, 0) && n->fam[0].result == DNS_ERR_NONE) ||
                  (asks(n, 1) && n->fam[1].result == DNS_ERR_NONE);
    for (int i = 0; exists && i < 2; i++)
        if (n->fam[i].result == DNS_ERR_NOTEXIST)
            n->fam[i].result = DNS_ERR_NODATA;
    for (int i = 0; i < 2; i++) {
        const struct rfam *f = &n->fam[i];
        if (!asks(n, i))
            continue;
        bool ok = f->result == DNS_ERR_NONE || f->result == DNS_ERR_NODATA;
        if (ok)
            answered = true;
        else if (bad == DNS_ERR_NODATA)
            bad = f->result;
        if (ok && f->ttl_ms >= 0 && f->ttl_ms < ms)
            ms = f->ttl_ms;
        int64_t again = f->result == DNS_ERR_NODATA && f->ttl_ms >= 0 ? f->ttl_ms : RETRY_MS;
        if (again < none_ms)
            none_ms = again;
    }
    merge(n, true);
    if (!answered || !n->scratch.n) {
        failed(n, bad, none_ms);
        return;
    }
    for (int i = 0; i < 2; i++) {
        struct rfam *f = &n->fam[i];
        if (!asks(n, i))
            continue;
        if (f->result == DNS_ERR_NONE || f->result == DNS_ERR_NODATA) {
            if (f->failing)
                log_info("dns: %s: %s answers again", n->host, FAMILY_RR[i]);
            f->failing = false;
            f->set = f->fresh;
            f->good = true;
            continue;
        }
        if (!f->failing && f->good)
            log_warn("dns: %s: %s: %s; keeping its last %zu %s addresses", n->host, FAMILY_RR[i],
                     why(n, f->result), f->set.n, FAMILY_NAME[i]);
        else if (!f->failing)
            log_warn("dns: %s: %s: %s; no %s address until it answers", n->host, FAMILY_RR[i],
                     why(n, f->result), FAMILY_NAME[i]);
        f->failing = true;
        ms = ms < RETRY_MS ? ms : RETRY_MS;
    }
    accept_set(n, ms);
}

static void on_answer(int result, char type, int count, int ttl, void *addresses, void *arg)
{
    struct rfam *f = arg;
    struct rname *n = f->n;
    f->querying = false;
    f->req = NULL;
    R.pending--;
    if (n->dropped) {
        if (querying(n))
            return; /* the other family's cancel comes */
        struct rname **p = &R.dropped;
        while (*p && *p != n)
            p = &(*p)->next;
        if (*p)
            *p = n->next;
        name_free(n);
        return;
    }
    addrset_clear(&f->fresh);
    f->result = result;
    f->ttl_ms = -1;
    char want = f->family == 4 ? DNS_IPv4_A : DNS_IPv6_AAAA;
    if (result == DNS_ERR_NONE && (type != want || count <= 0))
        f->result = DNS_ERR_NODATA; /* no record of the family */
    if (f->result == DNS_ERR_NONE) {
        size_t len = f->family == 4 ? 4 : 16;
        bool whole = true;
        for (int i = 0; i < count; i++) {
            const uint8_t *a = (const uint8_t *)addresses + len * i;
            if (addrset_link_local(f->family, a))
                skip_link_local(n, a);
            else
                whole &= addrset_add(&f->fresh, f->family, a);
        }
        if (!whole && !f->truncated)
            log_warn("dns: %s: %d %s records; only the lowest %d are used", n->host, count,
                     FAMILY_RR[f->family == 6], ADDRSET_MAX);
        f->truncated = !whole;
        f->ttl_ms = addrset_ttl_ms(ttl);
        if (!f->fresh.n)
            f->result = DNS_ERR_NODATA; /* link-local records only: none usable */
    } else if (result == DNS_ERR_NODATA && ttl > 0) {
        /* how long the name has no record of the family (RFC 2308's
         * negative caching): evdns reports the lower of the TTL and the
         * MINIMUM of the SOA in the authority section, 0 without one */
        f->ttl_ms = addrset_ttl_ms(ttl);
    }
    if (!n->launching && !querying(n))
        round_end(n);
}

static void query(struct rname *n)
{
    if (from_hosts(n)) { /* as the C library does: files before DNS */
        accept_set(n, HOSTS_RECHECK_MS);
        return;
    }
    n->launching = true;
    for (int i = 0; i < 2; i++) {
        struct rfam *f = &n->fam[i];
        if (!asks(n, i))
            continue;
        f->querying = true;
        f->result = DNS_ERR_UNKNOWN;
        f->ttl_ms = -1;
        R.pending++;
        struct evdns_request *req = i ? evdns_base_resolve_ipv6(R.dns, n->host, 0, on_answer, f)
                                      : evdns_base_resolve_ipv4(R.dns, n->host, 0, on_answer, f);
        if (f->querying)
            f->req = req; /* not already answered (synchronously) */
        if (!req && f->querying) {
            f->querying = false;
            R.pending--;
        }
    }
    n->launching = false;
    if (!querying(n))
        round_end(n);
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
            while (n && (strcmp(n->host, a->host) != 0 || n->want != up->resolve))
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
            n->want = up->resolve;
            for (int f = 0; f < 2; f++) {
                n->fam[f].n = n;
                n->fam[f].family = f ? 6 : 4;
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
        if (querying(n)) {
            n->dropped = true;
            n->next = R.dropped;
            R.dropped = n;
            event_del(n->timer);
            for (int f = 0; f < 2; f++)
                if (n->fam[f].querying)
                    evdns_cancel_request(R.dns, n->fam[f].req);
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
            if (!s->addr.numeric && !known(s->addr.host, up->resolve))
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
static const struct addrset *known(const char *host, enum config_resolve want)
{
    for (struct rname *n = R.names; n; n = n->next)
        if (strcmp(n->host, host) == 0 && n->want == want)
            return n->resolved && n->set.n ? &n->set : NULL;
    return NULL;
}

/* One server per address of its name (or as written while it has none). */
static void expand_upstream(struct config *cfg, struct config_upstream *up)
{
    size_t count = 0, bytes = 0;
    for (size_t i = 0; i < up->nservers; i++) {
        const struct config_server *s = &up->servers[i];
        const struct addrset *set = s->addr.numeric ? NULL : known(s->addr.host, up->resolve);
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
        const struct addrset *set = s->addr.numeric ? NULL : known(s->addr.host, up->resolve);
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
            bool v6 = set->a[j].family == 6;
            size_t len = (size_t)snprintf(str, strlen(s->addr.text) + 48, v6 ? "%s@[%s]" : "%s@%s",
                                          s->addr.text, ip);
            d->addr.text = str;
            str += len + 1;
            memset(&d->addr.sa, 0, sizeof(d->addr.sa));
            if (v6) {
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&d->addr.sa;
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons(s->addr.port);
                memcpy(&in6->sin6_addr, set->a[j].bytes, 16);
                d->addr.salen = sizeof(*in6);
            } else {
                struct sockaddr_in *in = (struct sockaddr_in *)&d->addr.sa;
                in->sin_family = AF_INET;
                in->sin_port = htons(s->addr.port);
                memcpy(&in->sin_addr, set->a[j].bytes, 4);
                d->addr.salen = sizeof(*in);
            }
            d->addr.numeric = true;
        }
    }
    up->servers = out;
    up->nservers = count;
}

/* The registry entries a config holds (registry.h): taken when it is
 * expanded, given back at its last unref. */
struct held {
    unsigned epoch;
    size_t n;
    struct registry_server *s[];
};

static void release_servers(struct config *cfg)
{
    struct held *h = cfg->servers_held_;
    for (size_t i = 0; h && i < h->n; i++)
        registry_release(h->s[i], h->epoch);
    free(h);
    cfg->servers_held_ = NULL;
}

static void hold_servers(struct config *cfg)
{
    if (cfg->servers_release_)
        return;
    size_t count = 0;
    for (size_t u = 0; u < cfg->nupstreams; u++)
        count += cfg->upstreams[u].nservers;
    struct held *h = malloc(sizeof(*h) + count * sizeof(h->s[0]));
    if (!h) {
        fprintf(stderr, "ferry: out of memory\n");
        abort();
    }
    h->epoch = registry_epoch();
    h->n = 0;
    cfg->servers_held_ = h;
    cfg->servers_release_ = release_servers;
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        const struct config_upstream *up = &cfg->upstreams[u];
        for (size_t i = 0; i < up->nservers; i++) {
            struct registry_server *s = registry_hold(up->name, up->servers[i].addr.text);
            if (!s) {
                fprintf(stderr, "ferry: out of memory\n");
                abort();
            }
            h->s[h->n++] = s;
        }
    }
}

void resolve_expand(struct config *cfg)
{
    for (size_t u = 0; R.names && u < cfg->nupstreams; u++)
        expand_upstream(cfg, &cfg->upstreams[u]);
    hold_servers(cfg);
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
