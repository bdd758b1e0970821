/*
 * config_schema: the typed getters and the one walker of the schema: each
 * mapping of the file is a table of fields (struct cfg_schema), walked by
 * cfg_walk, which reports unknown keys (with the nearest known one), keys
 * not supported yet, missing required keys and type errors.
 */
#include "config.h"
#include "config_internal.h"

#include <stdlib.h>

/* ---- typed getters: each reports its own error and returns false ---- */

bool cfg_want_scalar(struct ctx *c, const struct ynode *n, const struct cfg_path *path,
                     const char *what)
{
    if (n->kind == Y_SCALAR && !cfg_is_null(n))
        return true;
    char d[QLEN];
    cfg_err(c, n, path, "expected %s, got %s", what, cfg_describe(d, sizeof(d), n));
    return false;
}

bool cfg_get_string(struct ctx *c, const struct ynode *n, const struct cfg_path *path, char **out)
{
    if (!cfg_want_scalar(c, n, path, "a string"))
        return false;
    if (strlen(n->str) != n->len) {
        cfg_err(c, n, path, "a NUL character is not allowed here");
        return false;
    }
    *out = cfg_strndup(c->mem, n->str, n->len);
    return true;
}

/* An integer in [min, max]; `what` names the expectation in the error. */
bool cfg_get_uint(struct ctx *c, const struct ynode *n, const struct cfg_path *path, uint64_t min,
                  uint64_t max, const char *what, uint64_t *out)
{
    if (!cfg_want_scalar(c, n, path, what))
        return false;
    uint64_t v;
    char q[QLEN];
    if (!cfg_parse_u64(n->str, &v) || strlen(n->str) != n->len) {
        cfg_err(c, n, path, "expected %s, got %s", what, cfg_quote(q, sizeof(q), n->str, n->len));
        return false;
    }
    if (v < min || v > max) {
        cfg_err(c, n, path, "expected %s, got %s", what, n->str);
        return false;
    }
    *out = v;
    return true;
}

bool cfg_get_u32(struct ctx *c, const struct ynode *n, const struct cfg_path *path, uint64_t min,
                 uint64_t max, const char *what, uint32_t *out)
{
    uint64_t v;
    if (!cfg_get_uint(c, n, path, min, max, what, &v))
        return false;
    *out = (uint32_t)v;
    return true;
}

bool cfg_get_bool(struct ctx *c, const struct ynode *n, const struct cfg_path *path, bool *out)
{
    if (!cfg_want_scalar(c, n, path, "true or false"))
        return false;
    if (streq(n->str, "true")) {
        *out = true;
        return true;
    }
    if (streq(n->str, "false")) {
        *out = false;
        return true;
    }
    char q[QLEN];
    cfg_err(c, n, path, "expected true or false, got %s", cfg_quote(q, sizeof(q), n->str, n->len));
    return false;
}

bool cfg_get_duration(struct ctx *c, const struct ynode *n, const struct cfg_path *path,
                      bool zero_ok, int64_t *out)
{
    if (!cfg_want_scalar(c, n, path, "a duration like 250ms, 5s or 2m"))
        return false;
    const char *why;
    int64_t v;
    char q[QLEN];
    if (strlen(n->str) != n->len || config_parse_duration(n->str, &v, &why) != 0) {
        if (strlen(n->str) != n->len)
            why = "expected a duration like 250ms, 5s, 2m, 1h or 1h30m";
        cfg_err(c, n, path, "%s, got %s", why, cfg_quote(q, sizeof(q), n->str, n->len));
        return false;
    }
    if (v == 0 && !zero_ok) {
        cfg_err(c, n, path, "must be longer than 0");
        return false;
    }
    *out = v;
    return true;
}

bool cfg_get_size(struct ctx *c, const struct ynode *n, const struct cfg_path *path, uint64_t min,
                  uint64_t max, uint64_t *out)
{
    if (!cfg_want_scalar(c, n, path, "a size like 512, 16k or 1m"))
        return false;
    const char *why;
    uint64_t v;
    char q[QLEN];
    if (strlen(n->str) != n->len || config_parse_size(n->str, &v, &why) != 0) {
        if (strlen(n->str) != n->len)
            why = "expected a size like 512, 16k, 1m or 1g";
        cfg_err(c, n, path, "%s, got %s", why, cfg_quote(q, sizeof(q), n->str, n->len));
        return false;
    }
    if (v < min || v > max) {
        cfg_err(c, n, path, "must be between %llu and %llu bytes, got %s (%llu bytes)",
                (unsigned long long)min, (unsigned long long)max, n->str, (unsigned long long)v);
        return false;
    }
    *out = v;
    return true;
}

/* A mapping, or nothing (an empty section). */
bool cfg_want_map(struct ctx *c, const struct ynode *n, const struct cfg_path *path,
                  const char *what)
{
    if (n->kind == Y_MAP || cfg_is_null(n))
        return true;
    char d[QLEN];
    cfg_err(c, n, path, "expected %s, got %s", what, cfg_describe(d, sizeof(d), n));
    return false;
}

bool cfg_want_seq(struct ctx *c, const struct ynode *n, const struct cfg_path *path,
                  const char *what)
{
    if (n->kind == Y_SEQ || cfg_is_null(n))
        return true;
    char d[QLEN];
    cfg_err(c, n, path, "expected %s, got %s", what, cfg_describe(d, sizeof(d), n));
    return false;
}

/* Number of pairs of a mapping / items of a list; 0 for an empty section. */
size_t cfg_map_pairs(const struct ynode *n)
{
    return n->kind == Y_MAP ? n->n / 2 : 0;
}

size_t cfg_seq_items(const struct ynode *n)
{
    return n->kind == Y_SEQ ? n->n : 0;
}

/* A name of an upstream or route: letters, digits, '-', '_', '.'; 1-64. */
bool cfg_valid_name(const struct ynode *n)
{
    if (n->kind != Y_SCALAR || n->len == 0 || n->len > 64 || strlen(n->str) != n->len)
        return false;
    for (size_t i = 0; i < n->len; i++) {
        char ch = n->str[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.'))
            return false;
    }
    return true;
}

bool cfg_get_addr(struct ctx *c, const struct ynode *n, const struct cfg_path *path, bool names_ok,
                  struct config_addr *a)
{
    char *s;
    if (!cfg_want_scalar(c, n, path, "an address (host:port, [IPv6]:port or unix:/path)") ||
        !cfg_get_string(c, n, path, &s))
        return false;
    const char *why = cfg_parse_addr(c, s, names_ok, a);
    if (why) {
        char q[QLEN];
        cfg_err(c, n, path, "%s, got %s", why, cfg_quote(q, sizeof(q), n->str, n->len));
        return false;
    }
    return true;
}

/* ---- the walker: one function for every mapping of the schema ---- */

static const struct cfg_field *field_find(const struct cfg_schema *s, const char *key)
{
    for (const struct cfg_field *f = s->fields; f->key; f++)
        if (streq(f->key, key))
            return f;
    return NULL;
}

/* Reports an unknown key with the nearest known or later key, or the list
 * of known keys; returns the suggestion (NULL: none). */
static const char *unknown_key(struct ctx *c, const struct ynode *k, const struct cfg_path *path,
                               const struct cfg_schema *s)
{
    const char *cands[64];
    size_t n = 0;
    for (int later = 0; later < 2; later++)
        for (const struct cfg_field *f = s->fields; f->key && n < 64; f++)
            if ((f->kind == CFG_LATER) == later)
                cands[n++] = f->key;
    const char *near = cfg_nearest(k->str, cands, n);
    const struct cfg_path *sub = CFG_KEY(path, k->str);
    char q[96];
    cfg_quote(q, sizeof(q), k->str, k->len);
    if (near) {
        cfg_err(c, k, sub, "unknown key %s (did you mean \"%s\"?)", q, near);
        return near;
    }
    char list[256];
    size_t o = 0;
    list[0] = '\0';
    for (const struct cfg_field *f = s->fields; f->key && o + 40 < sizeof(list); f++)
        if (f->kind != CFG_LATER)
            o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", o ? ", " : "", f->key);
    cfg_err(c, k, sub, "unknown key %s (expected one of: %s)", q, list);
    return NULL;
}

static bool load_field(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                       const struct ynode *v, const struct cfg_path *path, void *target)
{
    char *at = (char *)target + f->offset;
    switch (f->kind) {
    case CFG_U32:
        return cfg_get_u32(c, v, path, f->min, f->max, f->what, (uint32_t *)(void *)at);
    case CFG_SIZE:
        return cfg_get_size(c, v, path, f->min, f->max, (uint64_t *)(void *)at);
    case CFG_DURATION:
        return cfg_get_duration(c, v, path, f->min == 0, (int64_t *)(void *)at);
    case CFG_BOOL:
        return cfg_get_bool(c, v, path, (bool *)(void *)at);
    case CFG_CUSTOM:
        return f->load(c, f, k, v, path, target);
    case CFG_LATER:
        break;
    }
    return false;
}

bool cfg_walk(struct ctx *c, const struct ynode *n, const struct cfg_path *path,
              const struct cfg_schema *s, void *target)
{
    if (s->what && !cfg_want_map(c, n, path, s->what))
        return false;
    uint64_t seen = 0; /* bit i: fields[i] present (or a misspelling of it reported) */
    bool ok = true;
    for (size_t i = 0; i < cfg_map_pairs(n); i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        if (k->kind != Y_SCALAR || k->repeated) { /* reported with the tree */
            ok = false;
            continue;
        }
        const struct cfg_field *f = field_find(s, k->str);
        if (!f) {
            const char *near = unknown_key(c, k, path, s);
            const struct cfg_field *nf = near ? field_find(s, near) : NULL;
            if (nf)
                seen |= 1ull << (nf - s->fields);
            ok = false;
            continue;
        }
        const struct cfg_path *sub = CFG_KEY(path, f->key);
        if (f->kind == CFG_LATER) {
            cfg_err(c, k, sub, "not supported yet by this version of ferry");
            ok = false;
            continue;
        }
        seen |= 1ull << (f - s->fields);
        ok &= load_field(c, f, k, v, sub, target);
    }
    for (const struct cfg_field *f = s->fields; f->key; f++) {
        if (f->required && !(seen & (1ull << (f - s->fields)))) {
            cfg_err(c, n, CFG_KEY(path, f->key), "%s", f->required);
            ok = false;
        }
    }
    return ok;
}

void cfg_defaults(const struct cfg_schema *s, void *target)
{
    for (const struct cfg_field *f = s->fields; f->key; f++) {
        char *at = (char *)target + f->offset;
        switch (f->kind) {
        case CFG_U32:
            *(uint32_t *)(void *)at = (uint32_t)f->def;
            break;
        case CFG_SIZE:
            *(uint64_t *)(void *)at = f->def;
            break;
        case CFG_DURATION:
            *(int64_t *)(void *)at = (int64_t)f->def;
            break;
        case CFG_BOOL:
            *(bool *)(void *)at = f->def != 0;
            break;
        case CFG_CUSTOM:
        case CFG_LATER:
            break;
        }
    }
}

const struct ynode *cfg_map_get(const struct ynode *n, const char *key)
{
    for (size_t i = 0; i < cfg_map_pairs(n); i++)
        if (n->v[2 * i]->kind == Y_SCALAR && !n->v[2 * i]->repeated && streq(n->v[2 * i]->str, key))
            return n->v[2 * i + 1];
    return NULL;
}

/* A default as the file would write it: the largest unit that divides it
 * (no minutes: 60s reads better than 1m next to 30s). */
struct unit {
    uint64_t size;
    const char *suffix;
};

static const char *format_default(const struct cfg_field *f, char *buf, size_t size)
{
    static const struct unit durations[] = {{3600000, "h"}, {1000, "s"}, {1, "ms"}},
                             sizes[] = {{1u << 30, "g"}, {1u << 20, "m"}, {1u << 10, "k"}, {1, ""}};
    if (f->kind == CFG_BOOL)
        return f->def ? "true" : "false";
    if (f->kind == CFG_U32 || ((f->kind == CFG_SIZE || f->kind == CFG_DURATION) && f->def == 0)) {
        snprintf(buf, size, "%llu", (unsigned long long)f->def);
        return buf;
    }
    if (f->kind != CFG_SIZE && f->kind != CFG_DURATION)
        return NULL;
    const struct unit *u = f->kind == CFG_DURATION ? durations : sizes;
    while (f->def % u->size != 0)
        u++;
    snprintf(buf, size, "%llu%s", (unsigned long long)(f->def / u->size), u->suffix);
    return buf;
}

static void schema_keys(const struct cfg_schema *const *schemas, config_key_fn *fn, void *arg)
{
    for (size_t i = 0; schemas[i]; i++) {
        for (const struct cfg_field *f = schemas[i]->fields; f->key; f++) {
            char def[32];
            fn(arg, schemas[i]->path, f->key, f->kind == CFG_LATER, f->doc,
               format_default(f, def, sizeof(def)));
        }
    }
}

void config_schema_keys(config_key_fn *fn, void *arg)
{
    schema_keys(cfg_schemas, fn, arg);
    schema_keys(cfg_auth_schemas, fn, arg);
}
