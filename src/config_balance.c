/*
 * config_balance: the loaders of an upstream's balancing and retry budget
 * keys (balance, hash_key, retries.budget), used by config.c's tables.
 */
#include "config.h"
#include "config_internal.h"

#include <stdlib.h>

bool cfg_load_balance(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                      const struct ynode *v, const struct cfg_path *path, void *target)
{
    static const char *const balances[] = {"round_robin", "least_conn", "random_two", "hash", NULL};
    struct config_upstream *u = target;
    char q[96];
    (void)f, (void)k;
    if (!cfg_want_scalar(c, v, path, "round_robin, least_conn, random_two or hash"))
        return false;
    for (size_t b = 0; balances[b]; b++) {
        if (streq(v->str, balances[b])) {
            u->balance = (enum config_balance)b;
            return true;
        }
    }
    const char *near = cfg_nearest(v->str, balances, 4);
    cfg_quote(q, sizeof(q), v->str, v->len);
    if (near)
        cfg_err(c, v, path, "unknown balance %s (did you mean \"%s\"?)", q, near);
    else
        cfg_err(c, v, path,
                "unknown balance %s (expected round_robin, least_conn, random_two or "
                "hash)",
                q);
    return false;
}

static bool token_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* hash_key: client_ip | header:NAME | cookie:NAME */
bool cfg_load_hash_key(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                       const struct ynode *v, const struct cfg_path *path, void *target)
{
    static const char *const sources[] = {"client_ip", "header:", "cookie:", NULL};
    struct config_upstream *u = target;
    char q[96];
    (void)f, (void)k;
    if (!cfg_want_scalar(c, v, path, "client_ip, header:NAME or cookie:NAME"))
        return false;
    cfg_quote(q, sizeof(q), v->str, v->len);
    if (streq(v->str, "client_ip")) {
        u->hash_source = CONFIG_HASH_CLIENT_IP;
        return true;
    }
    const char *colon = strchr(v->str, ':');
    size_t plen = colon ? (size_t)(colon - v->str) : 0;
    if (colon && ((plen == 6 && memcmp(v->str, "header", 6) == 0) ||
                  (plen == 6 && memcmp(v->str, "cookie", 6) == 0))) {
        const char *name = colon + 1;
        bool ok = *name != '\0' && strlen(name) <= 128;
        for (const char *p = name; ok && *p; p++)
            ok = token_char(*p);
        if (!ok) {
            cfg_err(c, v, path,
                    "expected a %s name after \"%.6s:\" (letters, digits, '-', '_'), "
                    "got %s",
                    v->str[0] == 'h' ? "header" : "cookie", v->str, q);
            return false;
        }
        u->hash_source = v->str[0] == 'h' ? CONFIG_HASH_HEADER : CONFIG_HASH_COOKIE;
        u->hash_name = cfg_alloc(c->mem, strlen(name) + 1);
        memcpy(u->hash_name, name, strlen(name) + 1);
        return true;
    }
    char word[16];
    snprintf(word, sizeof(word), "%.*s", colon ? (int)plen + 1 : 15, v->str);
    const char *near = cfg_nearest(word, sources, 3);
    if (near)
        cfg_err(c, v, path, "unknown hash key source %s (did you mean \"%s%s\"?)", q, near,
                near[strlen(near) - 1] == ':' ? "NAME" : "");
    else
        cfg_err(c, v, path,
                "unknown hash key source %s (expected client_ip, header:NAME or "
                "cookie:NAME)",
                q);
    return false;
}

/* retries.budget: "20%" (or a bare number, a percentage) */
bool cfg_load_retry_budget(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                           const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_upstream *u = target;
    char q[96];
    (void)f, (void)k;
    if (!cfg_want_scalar(c, v, path, "a percentage like 20%"))
        return false;
    const char *p = v->str;
    unsigned long pct = 0;
    bool ok = *p >= '0' && *p <= '9';
    while (ok && *p >= '0' && *p <= '9' && pct <= 1000)
        pct = pct * 10 + (unsigned long)(*p++ - '0');
    if (*p == '%')
        p++;
    if (!ok || *p || pct > 1000) {
        cfg_err(c, v, path, "expected a percentage from 0%% to 1000%%, got %s",
                cfg_quote(q, sizeof(q), v->str, v->len));
        return false;
    }
    u->retry_budget_pct = (uint32_t)pct;
    return true;
}
