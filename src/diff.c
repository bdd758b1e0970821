/* diff: see diff.h. */
#include "diff.h"

#include <errno.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "config.h"

#define DIFF_MAX_REPLY (16u << 20) /* the running config's form, at most */
#define DIFF_TIMEOUT_S 5

/* ---- the normalized form ---------------------------------------------------------------- */

static void put_val(FILE *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == '=' || c == '%' || c >= 0x7f)
            fprintf(out, "%%%02X", c);
        else
            fputc(c, out);
    }
}

static void kv(FILE *out, const char *k, const char *v)
{
    fprintf(out, " %s=", k);
    if (v)
        put_val(out, v, strlen(v));
    else
        fputc('-', out);
}

static void kvu(FILE *out, const char *k, unsigned long long v)
{
    fprintf(out, " %s=%llu", k, v);
}

static void kvb(FILE *out, const char *k, bool v)
{
    fprintf(out, " %s=%s", k, v ? "true" : "false");
}

static void kvms(FILE *out, const char *k, int64_t ms)
{
    if (ms % 1000 == 0)
        fprintf(out, " %s=%llds", k, (long long)(ms / 1000));
    else
        fprintf(out, " %s=%lldms", k, (long long)ms);
}

/* A value that may be a secret: shown as a 32-bit hash (FNV-1a), enough
 * to see that it changed. */
static void kvhash(FILE *out, const char *k, const char *v, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)v[i]) * 0x100000001b3ull;
    fprintf(out, " %s=#%08x", k, (unsigned)(h >> 32));
}

#define TIMEOUT(f)                                                                                 \
    {                                                                                              \
#f, offsetof(struct config_timeouts, f)                                                    \
    }
static const struct {
    const char *name;
    size_t off;
} TIMEOUTS[] = {
    TIMEOUT(client_header), TIMEOUT(client_body),      TIMEOUT(client_send),
    TIMEOUT(client_idle),   TIMEOUT(upstream_connect), TIMEOUT(upstream_header),
    TIMEOUT(upstream_read), TIMEOUT(upstream_send),    TIMEOUT(upstream_idle),
    TIMEOUT(total),         TIMEOUT(tunnel_idle),
};

static int64_t timeout_at(const struct config_timeouts *t, size_t off)
{
    int64_t v;
    memcpy(&v, (const char *)t + off, sizeof(v));
    return v;
}

/* Every timeout of t, or those that differ from base (a route's). */
static void timeouts_write(FILE *out, const char *prefix, const struct config_timeouts *t,
                           const struct config_timeouts *base)
{
    char k[64];
    for (size_t i = 0; i < sizeof(TIMEOUTS) / sizeof(TIMEOUTS[0]); i++) {
        int64_t v = timeout_at(t, TIMEOUTS[i].off);
        if (base && v == timeout_at(base, TIMEOUTS[i].off))
            continue;
        snprintf(k, sizeof(k), "%s%s", prefix, TIMEOUTS[i].name);
        kvms(out, k, v);
    }
}

static void rules_write(FILE *out, const char *what, const struct config_header_rules *r)
{
    char k[320];
    for (size_t i = 0; i < r->nset; i++) {
        snprintf(k, sizeof(k), "%s.set.%.*s", what, (int)r->set[i].name_len, r->set[i].name);
        kvhash(out, k, r->set[i].value, r->set[i].value_len);
    }
    for (size_t i = 0; i < r->nadd; i++) {
        snprintf(k, sizeof(k), "%s.add.%.*s", what, (int)r->add[i].name_len, r->add[i].name);
        kvhash(out, k, r->add[i].value, r->add[i].value_len);
    }
    for (size_t i = 0; i < r->nremove; i++) {
        snprintf(k, sizeof(k), "%s.remove.%.*s", what, (int)r->remove[i].name_len,
                 r->remove[i].name);
        fprintf(out, " ");
        put_val(out, k, strlen(k));
        fprintf(out, "=true");
    }
}

static void route_write(FILE *out, const struct config *cfg, const struct config_route *r)
{
    fprintf(out, "route ");
    put_val(out, r->name, strlen(r->name));
    kvu(out, "position", r->index + 1u);
    const struct config_match *m = &r->match;
    if (m->host) {
        char h[300];
        snprintf(h, sizeof(h), "%s%s", m->host_wildcard ? "*" : "", m->host);
        kv(out, "host", h);
    }
    if (m->path)
        kv(out, "path", m->path);
    if (m->path_prefix)
        kv(out, "path_prefix", m->path_prefix);
    if (m->nmethods) {
        fprintf(out, " methods=");
        for (size_t i = 0; i < m->nmethods; i++) {
            if (i)
                fputc(',', out);
            put_val(out, m->methods[i], strlen(m->methods[i]));
        }
    }
    if (r->upstream)
        kv(out, "upstream", r->upstream->name);
    if (r->respond) {
        kvu(out, "respond", r->respond->status);
        kvhash(out, "respond.body", r->respond->body, r->respond->body_len);
        if (r->respond->content_type)
            kv(out, "respond.content_type", r->respond->content_type);
    }
    if (r->strip_prefix)
        kv(out, "strip_prefix", r->strip_prefix);
    if (r->add_prefix)
        kv(out, "add_prefix", r->add_prefix);
    if (r->max_body_bytes != cfg->limits.max_body_bytes)
        kvu(out, "max_body_bytes", r->max_body_bytes);
    timeouts_write(out, "timeouts.", &r->timeouts, &cfg->timeouts);
    rules_write(out, "request_headers", &r->request_headers);
    rules_write(out, "response_headers", &r->response_headers);
    if (r->underscores_in_headers)
        kvb(out, "underscores_in_headers", true);
    if (r->reject_path_params)
        kvb(out, "reject_path_params", true);
    fputc('\n', out);
}

static void health_write(FILE *out, const struct config_health *h)
{
    kv(out, "health_check.path", h->path);
    if (!h->path)
        return;
    kv(out, "health_check.host", h->host);
    kvms(out, "health_check.interval", h->interval_ms);
    kvms(out, "health_check.timeout", h->timeout_ms);
    kvu(out, "health_check.healthy_after", h->healthy_after);
    kvu(out, "health_check.unhealthy_after", h->unhealthy_after);
    char st[256] = "";
    for (size_t i = 0, n = 0; i < h->nexpect_status && n + 5 < sizeof(st); i++)
        n += (size_t)snprintf(st + n, sizeof(st) - n, "%s%u", i ? "," : "",
                              (unsigned)h->expect_status[i]);
    kv(out, "health_check.expect_status", st);
    kvb(out, "health_check.start_healthy", h->start_healthy);
    kvb(out, "health_check.fail_open", h->fail_open);
}

static void upstream_write(FILE *out, const struct config_upstream *up)
{
    static const char *const host[] = {"preserve", "upstream", "literal"};
    static const char *const balance[] = {"round_robin", "least_conn", "random_two", "hash"};
    static const char *const source[] = {NULL, "client_ip", "header:", "cookie:"};
    fprintf(out, "upstream ");
    put_val(out, up->name, strlen(up->name));
    kv(out, "balance", balance[up->balance]);
    if (up->balance == CONFIG_BALANCE_HASH) {
        char key[300];
        snprintf(key, sizeof(key), "%s%s", source[up->hash_source] ? source[up->hash_source] : "",
                 up->hash_name ? up->hash_name : "");
        kv(out, "hash_key", key);
    }
    kvu(out, "keepalive", up->keepalive);
    kvu(out, "max_connections", up->max_connections);
    kv(out, "host_header",
       up->host_header == CONFIG_HOST_LITERAL ? up->host_literal : host[up->host_header]);
    kv(out, "resolve", (const char *const[]){"any", "ipv4", "ipv6"}[up->resolve]);
    kvu(out, "retries.attempts", up->retry_attempts);
    kvu(out, "retries.on", up->retry_on);
    kvu(out, "retries.replay_bytes", up->replay_bytes);
    kvu(out, "retries.budget", up->retry_budget_pct);
    kvu(out, "retries.budget_min", up->retry_budget_min);
    kvms(out, "retries.backoff", up->retry_backoff_ms);
    kvu(out, "passive.failures", up->passive_failures);
    kvms(out, "passive.eject_for", up->passive_eject_ms);
    kvms(out, "passive.max_eject_for", up->passive_max_eject_ms);
    health_write(out, &up->health);
    fputc('\n', out);
    for (size_t s = 0; s < up->nservers; s++) {
        fprintf(out, "server ");
        put_val(out, up->name, strlen(up->name));
        fputc('/', out);
        put_val(out, up->servers[s].addr.text, strlen(up->servers[s].addr.text));
        kvu(out, "weight", up->servers[s].weight);
        kvu(out, "position", s + 1);
        fputc('\n', out);
    }
}

void diff_config_write(FILE *out, const struct config *cfg)
{
    fprintf(out, "global -");
    kvu(out, "workers", cfg->workers);
    kvu(out, "coroutine_stack", cfg->coroutine_stack);
    kvu(out, "max_requests", cfg->max_requests);
    kvms(out, "shutdown_timeout", cfg->shutdown_timeout);
    kv(out, "pid_file", cfg->pid_file);
    kvu(out, "trusted_proxies", cfg->ntrusted_proxies);
    kv(out, "access_log", cfg->access_log.path);
    kvu(out, "access_log.format", cfg->access_log.format);
    kvu(out, "error_log.level", cfg->error_log_level);
    kv(out, "admin.listen", cfg->admin_listen ? cfg->admin_listen->text : NULL);
    fputc('\n', out);
    fprintf(out, "limits -");
    kvu(out, "max_connections", cfg->limits.max_connections);
    kvu(out, "max_header_bytes", cfg->limits.max_header_bytes);
    kvu(out, "max_headers", cfg->limits.max_headers);
    kvu(out, "max_body_bytes", cfg->limits.max_body_bytes);
    fputc('\n', out);
    fprintf(out, "timeouts -");
    timeouts_write(out, "", &cfg->timeouts, NULL);
    fputc('\n', out);
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct config_listener *l = &cfg->listeners[i];
        fprintf(out, "listener ");
        put_val(out, l->addr.text, strlen(l->addr.text));
        kvu(out, "backlog", l->backlog);
        kvb(out, "proxy_protocol", l->proxy_protocol);
        kvb(out, "defer_accept", l->defer_accept);
        fputc('\n', out);
    }
    for (size_t i = 0; i < cfg->nupstreams; i++)
        upstream_write(out, &cfg->upstreams[i]);
    for (size_t i = 0; i < cfg->nroutes; i++)
        route_write(out, cfg, &cfg->routes[i]);
}

/* ---- comparing two forms -------------------------------------------------------------- */

struct line {
    char *text;    /* "kind name k=v ..." (NUL-terminated, in the form's buffer) */
    size_t id_len; /* "kind name" */
};

/* Splits text into lines (in place). Returns how many; *out is malloc'd. */
static size_t lines_of(char *text, struct line **out)
{
    size_t n = 0, cap = 16;
    struct line *v = malloc(cap * sizeof(*v));
    for (char *p = text; v && p && *p;) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        if (*p) {
            if (n == cap) {
                struct line *g = realloc(v, (cap *= 2) * sizeof(*v));
                if (!g) {
                    free(v);
                    v = NULL;
                    break;
                }
                v = g;
            }
            char *sp = strchr(p, ' ');
            sp = sp ? strchr(sp + 1, ' ') : NULL;
            v[n].text = p;
            v[n].id_len = sp ? (size_t)(sp - p) : strlen(p);
            n++;
        }
        p = nl ? nl + 1 : NULL;
    }
    *out = v;
    return v ? n : 0;
}

static const struct line *find(const struct line *v, size_t n, const struct line *l)
{
    for (size_t i = 0; i < n; i++)
        if (v[i].id_len == l->id_len && memcmp(v[i].text, l->text, l->id_len) == 0)
            return &v[i];
    return NULL;
}

/* The value of key k in a line's settings, or NULL; *len set. */
static const char *setting(const char *settings, const char *k, size_t klen, size_t *len)
{
    for (const char *p = settings; p && *p;) {
        while (*p == ' ')
            p++;
        const char *end = strchr(p, ' ');
        size_t tlen = end ? (size_t)(end - p) : strlen(p);
        if (tlen > klen && p[klen] == '=' && memcmp(p, k, klen) == 0) {
            *len = tlen - klen - 1;
            return p + klen + 1;
        }
        p = end;
    }
    return NULL;
}

/* Prints "~ kind name: k a -> b, ..." for the settings that differ. */
static void changed(FILE *out, const struct line *was, const struct line *now)
{
    const char *a = was->text + was->id_len, *b = now->text + now->id_len;
    fprintf(out, "~ %.*s:", (int)now->id_len, now->text);
    bool first = true;
    for (int pass = 0; pass < 2; pass++) {
        const char *mine = pass ? a : b, *other = pass ? b : a;
        for (const char *p = mine; p && *p;) {
            while (*p == ' ')
                p++;
            const char *eq = strchr(p, '='), *end = strchr(p, ' ');
            size_t tlen = end ? (size_t)(end - p) : strlen(p);
            if (eq && (size_t)(eq - p) < tlen) {
                size_t klen = (size_t)(eq - p), vlen = tlen - klen - 1, olen = 0;
                const char *ov = setting(other, p, klen, &olen);
                bool differs =
                    pass == 0 ? !ov || olen != vlen || memcmp(ov, eq + 1, vlen) != 0 : !ov;
                if (pass == 0 && differs)
                    fprintf(out, "%s %.*s %.*s -> %.*s", first ? "" : ",", (int)klen, p,
                            ov ? (int)olen : 1, ov ? ov : "-", (int)vlen, eq + 1);
                else if (differs)
                    fprintf(out, "%s %.*s %.*s -> -", first ? "" : ",", (int)klen, p, (int)vlen,
                            eq + 1);
                first = first && !differs;
            }
            p = end;
        }
    }
    fputc('\n', out);
}

/* Prints what differs between two forms. Returns how many objects. */
static unsigned compare(FILE *out, char *running, char *file)
{
    struct line *was = NULL, *now = NULL;
    size_t nwas = lines_of(running, &was), nnow = lines_of(file, &now);
    unsigned count = 0;
    for (size_t i = 0; i < nnow; i++) {
        const struct line *o = find(was, nwas, &now[i]);
        if (!o) {
            fprintf(out, "+ %s\n", now[i].text);
            count++;
        } else if (strcmp(o->text, now[i].text) != 0) {
            changed(out, o, &now[i]);
            count++;
        }
    }
    for (size_t i = 0; i < nwas; i++) {
        if (!find(now, nnow, &was[i])) {
            fprintf(out, "- %.*s\n", (int)was[i].id_len, was[i].text);
            count++;
        }
    }
    free(was);
    free(now);
    return count;
}

/* ---- the running config, from the admin endpoint -------------------------------------- */

/* GET /config from a; returns the body (malloc'd) or NULL after printing why. */
static char *fetch_running(const struct config_addr *a, FILE *err)
{
    int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = DIFF_TIMEOUT_S, .tv_usec = 0};
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    if (fd < 0 || connect(fd, (const struct sockaddr *)&a->sa, a->salen) != 0) {
        fprintf(err, "ferry: diff: admin.listen %s: %s (is ferry running?)\n", a->text,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    static const char req[] = "GET /config HTTP/1.1\r\nHost: ferry\r\nConnection: close\r\n\r\n";
    size_t len = 0, cap = 65536;
    char *buf = malloc(cap + 1);
    ssize_t n = buf ? send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) : -1;
    while (n > 0 && len < DIFF_MAX_REPLY) {
        if (len == cap) {
            char *g = realloc(buf, (cap *= 2) + 1);
            if (!g)
                break;
            buf = g;
        }
        n = recv(fd, buf + len, cap - len, 0);
        if (n > 0)
            len += (size_t)n;
    }
    int e = errno;
    close(fd);
    if (!buf || n < 0) {
        fprintf(err, "ferry: diff: admin.listen %s: %s\n", a->text,
                buf ? strerror(e) : "out of memory");
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    char *body = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.1 200 ", 13) != 0 || !body) {
        fprintf(err, "ferry: diff: admin.listen %s: GET /config: %.*s\n", a->text,
                (int)strcspn(buf, "\r\n"), buf);
        free(buf);
        return NULL;
    }
    memmove(buf, body + 4, strlen(body + 4) + 1);
    return buf;
}

int diff_run(const char *path, FILE *out, FILE *err)
{
    struct config *cfg;
    if (config_load(path, &cfg, err) != 0)
        return 2;
    if (!cfg->admin_listen) {
        fprintf(err, "ferry: diff: %s has no admin.listen: cannot reach the running ferry\n", path);
        config_unref(cfg);
        return 2;
    }
    char *running = fetch_running(cfg->admin_listen, err);
    char *file = NULL;
    size_t flen = 0;
    FILE *f = running ? open_memstream(&file, &flen) : NULL;
    if (f) {
        diff_config_write(f, cfg);
        fclose(f);
    }
    config_unref(cfg);
    if (!running || !file) {
        free(running);
        free(file);
        return 2;
    }
    unsigned n = compare(out, running, file);
    free(running);
    free(file);
    if (n == 0)
        fprintf(out, "no changes\n");
    return n ? 1 : 0;
}
