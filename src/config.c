/*
 * config: see config.h for the contract, docs/config.md for the format.
 *
 * Three stages, each bounded:
 *  1. libyaml's event parser builds a small tree of scalars, lists and
 *     mappings with their positions (build_tree). Aliases point at the
 *     anchored node instead of copying it, and every node counts with its
 *     expanded size against CONFIG_MAX_NODES, so a "billion laughs" file
 *     stops early instead of being walked a billion times. Nesting is
 *     capped at CONFIG_MAX_DEPTH. Duplicate keys are found per mapping by
 *     sorting, so a mapping with many keys costs n log n.
 *  2. The schema walk (load_root and friends) checks every key against the
 *     keys it knows, the keys of the contract not implemented yet ("not
 *     supported yet") and suggests the nearest one for a typo. It keeps
 *     going after an error so one run reports every problem.
 *  3. Cross checks: route -> upstream names, duplicate route names,
 *     shadowed routes, unused upstreams.
 * Diagnostics are collected, sorted by position and printed with the
 * offending line and a caret.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <yaml.h>

/* ---- arena: everything of one config (or one parse tree) freed at once ---- */

struct arena_block {
    struct arena_block *next;
    size_t used, size;
    max_align_t data[];
};

struct arena {
    struct arena_block *head;
};

static void oom(void)
{
    fputs("ferry: config: out of memory\n", stderr);
    abort();
}

static void *arena_alloc(struct arena *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    struct arena_block *b = a->head;
    if (!b || b->size - b->used < size) {
        size_t bsize = size > 32768 ? size : 32768;
        b = malloc(sizeof(*b) + bsize);
        if (!b)
            oom();
        b->size = bsize;
        b->used = 0;
        if (a->head && size > 32768) {
            /* keep bump-allocating from the current block */
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
        }
    }
    void *p = (char *)b->data + b->used;
    b->used += size;
    memset(p, 0, size);
    return p;
}

static char *arena_strndup(struct arena *a, const char *s, size_t len)
{
    char *p = arena_alloc(a, len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

static char *arena_strdup(struct arena *a, const char *s)
{
    return arena_strndup(a, s, strlen(s));
}

static void arena_fini(struct arena *a)
{
    struct arena_block *b = a->head;
    while (b) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}

/* ---- the parse tree ---- */

enum ykind { Y_SCALAR, Y_SEQ, Y_MAP };

struct ynode {
    enum ykind kind;
    bool quoted;   /* a quoted or block scalar: never null, never a number */
    bool repeated; /* a key seen before in its mapping: reported, then ignored */
    uint32_t line; /* 1-based */
    uint32_t col;  /* 1-based, in characters */
    char *str;     /* scalars: NUL-terminated (may hold NULs: len counts) */
    size_t len;
    struct ynode **v; /* lists: items; mappings: key, value, key, value... */
    size_t n, cap;
    size_t weight; /* nodes in this subtree with aliases expanded */
};

/* ---- diagnostics ---- */

struct diag {
    uint32_t line, col; /* 0 = about the whole file */
    bool warning;
    size_t seq;
    char *path;
    char *msg;
};

/* Per-route and per-upstream facts the cross checks need. */
struct route_aux {
    const struct ynode *node, *upstream_node;
    char *upstream_name;
    struct config_timeouts timeouts;
    unsigned timeouts_set; /* bit i: field i of struct config_timeouts */
    bool has_max_body;
    bool quiet_name; /* a bad name or a bad route was reported: no derived name warning */
};

struct upstream_aux {
    const struct ynode *key;
    bool used;
};

struct ctx {
    const char *name;
    const char *src;
    size_t srclen;
    struct arena tree; /* the parse tree and diagnostics */
    struct arena *mem; /* the config's arena */
    struct config *cfg;
    struct diag *diags;
    size_t ndiags, capdiags;
    unsigned nerrors, nwarnings;
    bool too_many_errors;
    bool listen_seen;
    const char *last_suggestion; /* of the last unknown key: skip "required" */
    struct route_aux *raux;
    struct upstream_aux *uaux;
    const struct ynode *root;
};

static void vadd_diag(struct ctx *c, bool warning, uint32_t line, uint32_t col, const char *path,
                      const char *fmt, va_list ap)
{
    if (warning) {
        c->nwarnings++;
        if (c->nwarnings > CONFIG_MAX_ERRORS)
            return;
    } else {
        c->nerrors++;
        if (c->nerrors > CONFIG_MAX_ERRORS) {
            c->too_many_errors = true;
            return;
        }
    }
    if (c->ndiags == c->capdiags) {
        size_t cap = c->capdiags ? c->capdiags * 2 : 16;
        struct diag *d = arena_alloc(&c->tree, cap * sizeof(*d));
        if (c->ndiags)
            memcpy(d, c->diags, c->ndiags * sizeof(*d));
        c->diags = d;
        c->capdiags = cap;
    }
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    struct diag *d = &c->diags[c->ndiags];
    d->line = line;
    d->col = col;
    d->warning = warning;
    d->seq = c->ndiags++;
    d->path = arena_strdup(&c->tree, path ? path : "");
    d->msg = arena_strdup(&c->tree, msg);
}

__attribute__((format(printf, 4, 5))) static void err(struct ctx *c, const struct ynode *at,
                                                      const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vadd_diag(c, false, at ? at->line : 0, at ? at->col : 0, path, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 4, 5))) static void warn(struct ctx *c, const struct ynode *at,
                                                       const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vadd_diag(c, true, at ? at->line : 0, at ? at->col : 0, path, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 5, 6))) static void err_at(struct ctx *c, uint32_t line, uint32_t col,
                                                         const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vadd_diag(c, false, line, col, path, fmt, ap);
    va_end(ap);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t cp;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xe0) == 0xc0) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if ((s[0] & 0xf0) == 0xe0) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if ((s[0] & 0xf8) == 0xf0) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/*
 * Prints source line `line` (1-based) and a caret under character column
 * `col`. Control bytes and invalid UTF-8 print as '?'; a long line is
 * shown as a window of about 120 characters around the column.
 */
static void print_source_line(FILE *f, const char *src, size_t srclen, uint32_t line, uint32_t col)
{
    const char *p = src, *end = src + srclen;
    for (uint32_t l = 1; l < line && p < end; l++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return;
        p = nl + 1;
    }
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol)
        eol = end;
    if (eol > p && eol[-1] == '\r')
        eol--;
    /* count the characters, then print a window of them */
    size_t nch = 0;
    for (const char *q = p; q < eol; nch++) {
        size_t l = utf8_len((const unsigned char *)q, (size_t)(eol - q));
        q += l ? l : 1;
    }
    size_t caret = col ? col - 1 : 0;
    if (caret > nch)
        caret = nch;
    size_t from = 0, to = nch;
    if (nch > 120) {
        from = caret > 60 ? caret - 60 : 0;
        to = from + 120 < nch ? from + 120 : nch;
    }
    char out[1024];
    size_t o = 0;
    char mark[256];
    size_t m = 0;
    if (from > 0) {
        memcpy(out, "...", 3);
        memcpy(mark, "   ", 3);
        o = m = 3;
    }
    const char *q = p;
    for (size_t i = 0; i < to; i++) {
        const unsigned char *s = (const unsigned char *)q;
        size_t l = utf8_len(s, (size_t)(eol - q));
        bool valid = l != 0;
        q += valid ? l : 1;
        if (i < from)
            continue;
        if (*s == '\t') {
            out[o++] = '\t';
        } else if (!valid || *s < 0x20 || *s == 0x7f) {
            out[o++] = '?';
        } else {
            memcpy(out + o, s, l);
            o += l;
        }
        if (i < caret)
            mark[m++] = *s == '\t' ? '\t' : ' ';
    }
    if (to < nch) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    mark[m++] = '^';
    fprintf(f, "%.*s\n%.*s\n", (int)o, out, (int)m, mark);
}

static int diag_cmp(const void *a, const void *b)
{
    const struct diag *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void print_diags(struct ctx *c, FILE *f)
{
    if (!f)
        return;
    if (c->ndiags)
        qsort(c->diags, c->ndiags, sizeof(*c->diags), diag_cmp);
    for (size_t i = 0; i < c->ndiags; i++) {
        const struct diag *d = &c->diags[i];
        if (d->line)
            fprintf(f, "%s:%u:%u: ", c->name, d->line, d->col);
        else
            fprintf(f, "%s: ", c->name);
        if (d->path[0])
            fprintf(f, "%s: ", d->path);
        fprintf(f, "%s%s\n", d->warning ? "warning: " : "", d->msg);
        if (d->line)
            print_source_line(f, c->src, c->srclen, d->line, d->col);
    }
    if (c->nerrors) {
        if (c->too_many_errors)
            fprintf(f, "%s: too many errors, stopped after %d\n", c->name, CONFIG_MAX_ERRORS);
        else
            fprintf(f, "%s: %u error%s, %u warning%s\n", c->name, c->nerrors,
                    c->nerrors == 1 ? "" : "s", c->nwarnings, c->nwarnings == 1 ? "" : "s");
    }
    fflush(f);
}

/* ---- small string helpers ---- */

/* Buffers for paths and quoted values: small, frames stay under 4 KiB even
 * with the sanitizers' redzones. A longer path ends in "...". */
enum { PATHLEN = 200, QLEN = 72 };
/* Each schema level keeps its own frame instead of one inlined giant. */
#define NOINLINE __attribute__((noinline))

static bool streq(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

/* Writes s as a double-quoted, escaped, possibly shortened string. */
static const char *quote(char *buf, size_t size, const char *s, size_t len)
{
    size_t o = 0;
    buf[o++] = '"';
    for (size_t i = 0; i < len && o + 8 < size; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (i == 48 && len > 52) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (ch == '"' || ch == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", ch);
        } else {
            buf[o++] = (char)ch;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

static bool is_null(const struct ynode *n)
{
    if (n->kind != Y_SCALAR || n->quoted)
        return false;
    return n->len == 0 || streq(n->str, "~") || streq(n->str, "null") || streq(n->str, "Null") ||
           streq(n->str, "NULL");
}

/* What a node is, for "expected X, got Y". */
static const char *describe(char *buf, size_t size, const struct ynode *n)
{
    if (n->kind == Y_SEQ)
        return "a list";
    if (n->kind == Y_MAP)
        return "a mapping";
    if (is_null(n))
        return "nothing";
    return quote(buf, size, n->str, n->len);
}

/* Paths longer than the buffer (absurd keys) end in "...". */
static void fix_truncated(char *out, size_t size, int r)
{
    if ((r < 0 || (size_t)r >= size) && size > 4)
        memcpy(out + size - 4, "...", 4);
}

static void subpath(char *out, size_t size, const char *path, const char *key)
{
    fix_truncated(out, size, snprintf(out, size, "%s%s%s", path, path[0] ? "." : "", key));
}

static void idxpath(char *out, size_t size, const char *path, size_t i)
{
    fix_truncated(out, size, snprintf(out, size, "%s[%zu]", path, i));
}

/* Optimal string alignment distance, for did-you-mean. Long strings: far. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 100;
    size_t rows[3][65]; /* i-2, i-1, i */
    size_t *pp = rows[0], *prev = rows[1], *cur = rows[2];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = prev[j] + 1;
            if (cur[j - 1] + 1 < best)
                best = cur[j - 1] + 1;
            if (prev[j - 1] + cost < best)
                best = prev[j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                pp[j - 2] + 1 < best)
                best = pp[j - 2] + 1;
            cur[j] = best;
        }
        size_t *t = pp;
        pp = prev;
        prev = cur;
        cur = t;
    }
    return prev[lb];
}

/* The candidate nearest to `word`, or NULL when none is near enough. */
static const char *nearest(const char *word, const char *const *cands, size_t ncands)
{
    size_t len = strlen(word);
    size_t limit = len <= 4 ? 1 : len <= 8 ? 2 : 3;
    const char *best = NULL;
    size_t bestd = limit + 1;
    for (size_t i = 0; i < ncands; i++) {
        if (!cands[i])
            continue;
        size_t d = strcasecmp(word, cands[i]) == 0 ? 0 : edit_distance(word, cands[i]);
        if (d < bestd) {
            bestd = d;
            best = cands[i];
        }
    }
    return best;
}

static size_t count_list(const char *const *l)
{
    size_t n = 0;
    while (l && l[n])
        n++;
    return n;
}

/* ---- stage 1: the tree ---- */

struct anchor {
    const char *name;
    struct ynode *node;
};

struct builder {
    struct ctx *c;
    struct ynode *stack[CONFIG_MAX_DEPTH + 1];
    size_t start_count[CONFIG_MAX_DEPTH + 1];
    size_t depth;
    size_t count; /* expanded nodes so far */
    struct anchor *anchors;
    size_t nanchors, capanchors; /* open addressing, capanchors a power of 2 */
    struct ynode *root;
    unsigned documents;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static struct anchor *anchor_slot(struct anchor *tab, size_t cap, const char *name)
{
    size_t i = hash_str(name) & (cap - 1);
    while (tab[i].name && !streq(tab[i].name, name))
        i = (i + 1) & (cap - 1);
    return &tab[i];
}

static void anchor_set(struct builder *b, const char *name, struct ynode *node)
{
    if ((b->nanchors + 1) * 2 > b->capanchors) {
        size_t cap = b->capanchors ? b->capanchors * 2 : 64;
        struct anchor *tab = arena_alloc(&b->c->tree, cap * sizeof(*tab));
        for (size_t i = 0; i < b->capanchors; i++)
            if (b->anchors[i].name)
                *anchor_slot(tab, cap, b->anchors[i].name) = b->anchors[i];
        b->anchors = tab;
        b->capanchors = cap;
    }
    struct anchor *s = anchor_slot(b->anchors, b->capanchors, name);
    if (!s->name) {
        s->name = arena_strdup(&b->c->tree, name);
        b->nanchors++;
    }
    s->node = node;
}

static struct ynode *anchor_get(struct builder *b, const char *name)
{
    if (!b->capanchors)
        return NULL;
    struct anchor *s = anchor_slot(b->anchors, b->capanchors, name);
    return s->name ? s->node : NULL;
}

/*
 * The path of the node being built: each open container's child is its
 * last item; in the innermost one, the key whose value is awaited (or the
 * next list index). Used for syntax, depth and duplicate-key errors.
 */
static void builder_path(struct builder *b, char *out, size_t size)
{
    out[0] = '\0';
    char tmp[PATHLEN];
    for (size_t i = 0; i < b->depth; i++) {
        struct ynode *n = b->stack[i];
        bool inner = i + 1 == b->depth;
        if (n->kind == Y_SEQ) {
            idxpath(tmp, sizeof(tmp), out, inner ? n->n : n->n - 1);
        } else {
            size_t k = inner ? (n->n % 2 ? n->n - 1 : SIZE_MAX) : n->n - 2;
            if (k == SIZE_MAX || n->v[k]->kind != Y_SCALAR)
                break;
            subpath(tmp, sizeof(tmp), out, n->v[k]->str);
        }
        fix_truncated(out, size, snprintf(out, size, "%s", tmp));
    }
}

static void node_append(struct ctx *c, struct ynode *parent, struct ynode *child)
{
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 4;
        struct ynode **v = arena_alloc(&c->tree, cap * sizeof(*v));
        if (parent->n)
            memcpy(v, parent->v, parent->n * sizeof(*v));
        parent->v = v;
        parent->cap = cap;
    }
    parent->v[parent->n++] = child;
}

static int key_cmp(const void *a, const void *b)
{
    const struct ynode *x = *(const struct ynode *const *)a, *y = *(const struct ynode *const *)b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    int r = memcmp(x->str, y->str, x->len);
    if (r)
        return r;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->col < y->col ? -1 : x->col > y->col;
}

/* A finished mapping: keys must be scalars and unique. */
static void check_mapping_keys(struct builder *b, struct ynode *map)
{
    struct ctx *c = b->c;
    size_t nkeys = map->n / 2;
    if (nkeys == 0)
        return;
    struct ynode **keys = arena_alloc(&c->tree, nkeys * sizeof(*keys));
    size_t k = 0;
    char path[PATHLEN];
    builder_path(b, path, sizeof(path));
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        struct ynode *key = map->v[i];
        char what[QLEN];
        if (key->kind != Y_SCALAR)
            err(c, key, path, "expected a plain key, got %s", describe(what, sizeof(what), key));
        else
            keys[k++] = key;
    }
    qsort(keys, k, sizeof(*keys), key_cmp);
    for (size_t i = 1; i < k; i++) {
        if (keys[i]->len == keys[i - 1]->len &&
            memcmp(keys[i]->str, keys[i - 1]->str, keys[i]->len) == 0) {
            size_t first = i - 1;
            while (first > 0 && keys[first - 1]->len == keys[i]->len &&
                   memcmp(keys[first - 1]->str, keys[i]->str, keys[i]->len) == 0)
                first--;
            char sub[512], q[96];
            keys[i]->repeated = true;
            subpath(sub, sizeof(sub), path, keys[i]->str);
            err(c, keys[i], sub, "duplicate key %s (first at line %u)",
                quote(q, sizeof(q), keys[i]->str, keys[i]->len), keys[first]->line);
        }
    }
}

/* Adds a finished node (or an alias target) to the open container. */
static void builder_add(struct builder *b, struct ynode *node)
{
    if (b->depth == 0)
        b->root = node;
    else
        node_append(b->c, b->stack[b->depth - 1], node);
}

static struct ynode *new_node(struct builder *b, enum ykind kind, const yaml_mark_t *m)
{
    struct ynode *n = arena_alloc(&b->c->tree, sizeof(*n));
    n->kind = kind;
    n->line = (uint32_t)(m->line + 1);
    n->col = (uint32_t)(m->column + 1);
    return n;
}

/* Line and column (1-based, characters) of a byte offset in the source. */
static void offset_position(const struct ctx *c, size_t off, uint32_t *line, uint32_t *col)
{
    uint32_t l = 1, cl = 1;
    if (off > c->srclen)
        off = c->srclen;
    for (size_t i = 0; i < off;) {
        if (c->src[i] == '\n') {
            l++;
            cl = 1;
            i++;
            continue;
        }
        size_t n = utf8_len((const unsigned char *)c->src + i, c->srclen - i);
        i += n ? n : 1;
        cl++;
    }
    *line = l;
    *col = cl;
}

/* The first byte of the character at line:col (1-based), or -1. */
static int source_char(const struct ctx *c, uint32_t line, uint32_t col)
{
    size_t i = 0;
    for (uint32_t l = 1; l < line; l++) {
        const char *nl = memchr(c->src + i, '\n', c->srclen - i);
        if (!nl)
            return -1;
        i = (size_t)(nl - c->src) + 1;
    }
    for (uint32_t k = 1; k < col && i < c->srclen && c->src[i] != '\n'; k++) {
        size_t n = utf8_len((const unsigned char *)c->src + i, c->srclen - i);
        i += n ? n : 1;
    }
    return i < c->srclen ? (unsigned char)c->src[i] : -1;
}

static void syntax_error(struct builder *b, yaml_parser_t *p)
{
    struct ctx *c = b->c;
    char path[PATHLEN];
    builder_path(b, path, sizeof(path));
    uint32_t line, col;
    if (p->error == YAML_READER_ERROR) {
        offset_position(c, p->problem_offset, &line, &col);
        if (p->problem_value != -1)
            err_at(c, line, col, path, "%s (byte 0x%02x)", p->problem ? p->problem : "bad input",
                   (unsigned)p->problem_value & 0xff);
        else
            err_at(c, line, col, path, "%s", p->problem ? p->problem : "bad input");
        return;
    }
    if (p->error == YAML_MEMORY_ERROR)
        oom();
    line = (uint32_t)p->problem_mark.line + 1;
    col = (uint32_t)p->problem_mark.column + 1;
    if (source_char(c, line, col) == '\t')
        err_at(c, line, col, path, "YAML syntax error: a tab; YAML indents with spaces only");
    else if (p->context)
        err_at(c, line, col, path, "YAML syntax error: %s %s (line %zu, column %zu)", p->problem,
               p->context, p->context_mark.line + 1, p->context_mark.column + 1);
    else
        err_at(c, line, col, path, "YAML syntax error: %s",
               p->problem ? p->problem : "malformed input");
}

/*
 * Parses the whole buffer into b->root. Returns 0, or -1 after reporting
 * the error (syntax, depth, size, aliases). Only stops at the first error:
 * after a YAML syntax error nothing that follows has a reliable meaning.
 */
NOINLINE static int build_tree(struct builder *b)
{
    struct ctx *c = b->c;
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        oom();
    yaml_parser_set_input_string(&p, (const unsigned char *)c->src, c->srclen);
    yaml_parser_set_encoding(&p, YAML_UTF8_ENCODING);
    int rc = -1;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            syntax_error(b, &p);
            break;
        }
        const yaml_mark_t *m = &ev.start_mark;
        struct ynode *node = NULL;
        const char *anchor = NULL;
        bool done = false, fail = false;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++b->documents > 1) {
                char path[1] = "";
                err_at(c, (uint32_t)m->line + 1, (uint32_t)m->column + 1, path,
                       "a second YAML document: a config file holds exactly one");
                fail = true;
            }
            break;
        case YAML_SCALAR_EVENT:
            node = new_node(b, Y_SCALAR, m);
            node->str =
                arena_strndup(&c->tree, (const char *)ev.data.scalar.value, ev.data.scalar.length);
            node->len = ev.data.scalar.length;
            node->quoted = ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
            node->weight = 1;
            anchor = (const char *)ev.data.scalar.anchor;
            b->count++;
            builder_add(b, node);
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (b->depth == CONFIG_MAX_DEPTH) {
                char path[PATHLEN];
                builder_path(b, path, sizeof(path));
                err_at(c, (uint32_t)m->line + 1, (uint32_t)m->column + 1, path,
                       "nested deeper than %d levels", CONFIG_MAX_DEPTH);
                fail = true;
                break;
            }
            node = new_node(b, ev.type == YAML_SEQUENCE_START_EVENT ? Y_SEQ : Y_MAP, m);
            anchor =
                (const char *)(ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.anchor
                                                                    : ev.data.mapping_start.anchor);
            /* the anchor becomes usable when the node is complete (no cycles) */
            node->str = anchor ? arena_strdup(&c->tree, anchor) : NULL;
            anchor = NULL;
            b->count++;
            builder_add(b, node);
            b->start_count[b->depth] = b->count;
            b->stack[b->depth++] = node;
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT: {
            struct ynode *n = b->stack[b->depth - 1];
            n->weight = b->count - b->start_count[b->depth - 1] + 1;
            if (n->kind == Y_MAP)
                check_mapping_keys(b, n);
            b->depth--;
            if (n->str) {
                anchor_set(b, n->str, n);
                n->str = NULL;
            }
            break;
        }
        case YAML_ALIAS_EVENT: {
            const char *name = (const char *)ev.data.alias.anchor;
            struct ynode *target = anchor_get(b, name);
            if (!target) {
                char path[512], q[96];
                builder_path(b, path, sizeof(path));
                err_at(c, (uint32_t)m->line + 1, (uint32_t)m->column + 1, path,
                       "alias %s: no anchor of that name is defined before it",
                       quote(q, sizeof(q), name, strlen(name)));
                fail = true;
                break;
            }
            b->count += target->weight;
            builder_add(b, target);
            break;
        }
        default:
            break;
        }
        if (anchor && node)
            anchor_set(b, anchor, node);
        if (!fail && b->count > CONFIG_MAX_NODES) {
            char path[PATHLEN];
            builder_path(b, path, sizeof(path));
            err_at(c, (uint32_t)m->line + 1, (uint32_t)m->column + 1, path,
                   "more than %d YAML nodes (counting each use of an alias): too large",
                   CONFIG_MAX_NODES);
            fail = true;
        }
        yaml_event_delete(&ev);
        if (fail)
            break;
        if (done) {
            rc = 0;
            break;
        }
    }
    yaml_parser_delete(&p);
    return rc;
}

/* ---- value parsers ---- */

int config_parse_duration(const char *s, int64_t *ms, const char **why)
{
    static const int64_t max = 366LL * 24 * 3600 * 1000;
    const char *p = s;
    int64_t total = 0;
    if (streq(s, "0")) {
        *ms = 0;
        return 0;
    }
    if (!*p)
        goto bad;
    while (*p) {
        if (*p < '0' || *p > '9')
            goto bad;
        int64_t v = 0;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (*p++ - '0');
            if (v > max)
                goto too_large;
        }
        int64_t unit;
        if (p[0] == 'm' && p[1] == 's') {
            unit = 1;
            p += 2;
        } else if (*p == 's') {
            unit = 1000;
            p++;
        } else if (*p == 'm') {
            unit = 60 * 1000;
            p++;
        } else if (*p == 'h') {
            unit = 3600 * 1000;
            p++;
        } else if (*p == 'd') {
            unit = 24 * 3600 * 1000;
            p++;
        } else if (!*p) {
            *why = "a duration needs a unit: ms, s, m, h or d (like 250ms, 5s, 2m)";
            return -1;
        } else {
            goto bad;
        }
        if (v > max / unit)
            goto too_large;
        total += v * unit;
        if (total > max)
            goto too_large;
    }
    *ms = total;
    return 0;
bad:
    *why = "expected a duration like 250ms, 5s, 2m, 1h or 1h30m";
    return -1;
too_large:
    *why = "too large: a duration is at most 366d";
    return -1;
}

int config_parse_size(const char *s, uint64_t *bytes, const char **why)
{
    static const uint64_t max = 1ull << 50; /* 1 PiB: more is a typo */
    const char *p = s;
    uint64_t v = 0;
    if (*p < '0' || *p > '9')
        goto bad;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (uint64_t)(*p++ - '0');
        if (v > max)
            goto too_large;
    }
    uint64_t unit = 1;
    switch (*p) {
    case '\0':
        break;
    case 'k':
    case 'K':
        unit = 1ull << 10;
        p++;
        break;
    case 'm':
    case 'M':
        unit = 1ull << 20;
        p++;
        break;
    case 'g':
    case 'G':
        unit = 1ull << 30;
        p++;
        break;
    default:
        goto bad;
    }
    if (*p)
        goto bad;
    if (v > max / unit)
        goto too_large;
    *bytes = v * unit;
    return 0;
bad:
    *why = "expected a size like 512, 16k, 1m or 1g";
    return -1;
too_large:
    *why = "too large";
    return -1;
}

/* ---- typed getters: each reports its own error and returns false ---- */

static bool want_scalar(struct ctx *c, const struct ynode *n, const char *path, const char *what)
{
    if (n->kind == Y_SCALAR && !is_null(n))
        return true;
    char d[QLEN];
    err(c, n, path, "expected %s, got %s", what, describe(d, sizeof(d), n));
    return false;
}

static bool get_string(struct ctx *c, const struct ynode *n, const char *path, char **out)
{
    if (!want_scalar(c, n, path, "a string"))
        return false;
    if (strlen(n->str) != n->len) {
        err(c, n, path, "a NUL character is not allowed here");
        return false;
    }
    *out = arena_strndup(c->mem, n->str, n->len);
    return true;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

/* An integer in [min, max]; `what` names the expectation in the error. */
static bool get_uint(struct ctx *c, const struct ynode *n, const char *path, uint64_t min,
                     uint64_t max, const char *what, uint64_t *out)
{
    if (!want_scalar(c, n, path, what))
        return false;
    uint64_t v;
    char q[QLEN];
    if (!parse_u64(n->str, &v) || strlen(n->str) != n->len) {
        err(c, n, path, "expected %s, got %s", what, quote(q, sizeof(q), n->str, n->len));
        return false;
    }
    if (v < min || v > max) {
        err(c, n, path, "expected %s, got %s", what, n->str);
        return false;
    }
    *out = v;
    return true;
}

static bool get_u32(struct ctx *c, const struct ynode *n, const char *path, uint64_t min,
                    uint64_t max, const char *what, uint32_t *out)
{
    uint64_t v;
    if (!get_uint(c, n, path, min, max, what, &v))
        return false;
    *out = (uint32_t)v;
    return true;
}

static bool get_bool(struct ctx *c, const struct ynode *n, const char *path, bool *out)
{
    if (!want_scalar(c, n, path, "true or false"))
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
    err(c, n, path, "expected true or false, got %s", quote(q, sizeof(q), n->str, n->len));
    return false;
}

static bool get_duration(struct ctx *c, const struct ynode *n, const char *path, bool zero_ok,
                         int64_t *out)
{
    if (!want_scalar(c, n, path, "a duration like 250ms, 5s or 2m"))
        return false;
    const char *why;
    int64_t v;
    char q[QLEN];
    if (strlen(n->str) != n->len || config_parse_duration(n->str, &v, &why) != 0) {
        if (strlen(n->str) != n->len)
            why = "expected a duration like 250ms, 5s, 2m, 1h or 1h30m";
        err(c, n, path, "%s, got %s", why, quote(q, sizeof(q), n->str, n->len));
        return false;
    }
    if (v == 0 && !zero_ok) {
        err(c, n, path, "must be longer than 0");
        return false;
    }
    *out = v;
    return true;
}

static bool get_size(struct ctx *c, const struct ynode *n, const char *path, uint64_t min,
                     uint64_t max, uint64_t *out)
{
    if (!want_scalar(c, n, path, "a size like 512, 16k or 1m"))
        return false;
    const char *why;
    uint64_t v;
    char q[QLEN];
    if (strlen(n->str) != n->len || config_parse_size(n->str, &v, &why) != 0) {
        if (strlen(n->str) != n->len)
            why = "expected a size like 512, 16k, 1m or 1g";
        err(c, n, path, "%s, got %s", why, quote(q, sizeof(q), n->str, n->len));
        return false;
    }
    if (v < min || v > max) {
        err(c, n, path, "must be between %llu and %llu bytes, got %s (%llu bytes)",
            (unsigned long long)min, (unsigned long long)max, n->str, (unsigned long long)v);
        return false;
    }
    *out = v;
    return true;
}

/* A mapping, or nothing (an empty section). */
static bool want_map(struct ctx *c, const struct ynode *n, const char *path, const char *what)
{
    if (n->kind == Y_MAP || is_null(n))
        return true;
    char d[QLEN];
    err(c, n, path, "expected %s, got %s", what, describe(d, sizeof(d), n));
    return false;
}

static bool want_seq(struct ctx *c, const struct ynode *n, const char *path, const char *what)
{
    if (n->kind == Y_SEQ || is_null(n))
        return true;
    char d[QLEN];
    err(c, n, path, "expected %s, got %s", what, describe(d, sizeof(d), n));
    return false;
}

/* Number of pairs of a mapping / items of a list; 0 for an empty section. */
static size_t map_pairs(const struct ynode *n)
{
    return n->kind == Y_MAP ? n->n / 2 : 0;
}

static size_t seq_items(const struct ynode *n)
{
    return n->kind == Y_SEQ ? n->n : 0;
}

/*
 * Looks a key up in `known` (returns its name) and `later` (the contract's
 * keys not implemented yet: an error). Unknown keys get the nearest of both
 * lists. Returns NULL after reporting. Non-scalar keys were reported while
 * building the tree.
 */
static const char *lookup_key(struct ctx *c, const struct ynode *key, const char *path,
                              const char *const *known, const char *const *later)
{
    if (key->kind != Y_SCALAR || key->repeated)
        return NULL;
    char sub[512], q[96];
    subpath(sub, sizeof(sub), path, key->str);
    for (size_t i = 0; known[i]; i++)
        if (streq(key->str, known[i]))
            return known[i];
    for (size_t i = 0; later && later[i]; i++) {
        if (streq(key->str, later[i])) {
            err(c, key, sub, "not supported yet by this version of ferry");
            return NULL;
        }
    }
    size_t nk = count_list(known), nl = count_list(later);
    const char *cands[64] = {NULL};
    size_t n = 0;
    for (size_t i = 0; i < nk && n < 64; i++)
        cands[n++] = known[i];
    for (size_t i = 0; i < nl && n < 64; i++)
        cands[n++] = later[i];
    const char *near = nearest(key->str, cands, n);
    c->last_suggestion = near;
    quote(q, sizeof(q), key->str, key->len);
    if (near) {
        err(c, key, sub, "unknown key %s (did you mean \"%s\"?)", q, near);
    } else {
        char list[256];
        size_t o = 0;
        list[0] = '\0';
        for (size_t i = 0; i < nk && o + 40 < sizeof(list); i++)
            o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", known[i]);
        err(c, key, sub, "unknown key %s (expected one of: %s)", q, list);
    }
    return NULL;
}

/*
 * Walks a mapping's pairs from *i: returns the next key that lookup_key
 * knows (unknown and "not supported yet" keys are reported there and
 * skipped), with its value in *value and "path.key" in sub; NULL at the
 * end. Loop: for (size_t i = 0; (key = next_key(...));).
 */
static const char *next_key(struct ctx *c, const struct ynode *n, const char *path,
                            const char *const *keys, size_t *i, const struct ynode **value,
                            char *sub, size_t sub_size)
{
    while (*i < map_pairs(n)) {
        const struct ynode *k = n->v[2 * *i], *v = n->v[2 * *i + 1];
        (*i)++;
        const char *key = lookup_key(c, k, path, keys, NULL);
        if (key) {
            subpath(sub, sub_size, path, key);
            *value = v;
            return key;
        }
    }
    return NULL;
}

/* A name of an upstream or route: letters, digits, '-', '_', '.'; 1-64. */
static bool valid_name(const struct ynode *n)
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

/* ---- addresses and CIDRs ---- */

static bool valid_hostname(const char *h)
{
    size_t len = strlen(h);
    if (len == 0 || len > 253)
        return false;
    for (const char *p = h; *p; p++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '.' || ch == '_'))
            return false;
    }
    return h[0] != '.' && h[0] != '-' && !strstr(h, "..");
}

/*
 * Parses "host:port", "[v6]:port" or "unix:/path" into *a (strings in the
 * config arena). names_ok: a DNS name is allowed as host (servers), else the
 * host must be an IP literal (listeners). Returns NULL or why it is bad.
 */
static const char *parse_addr(struct ctx *c, const char *s, bool names_ok, struct config_addr *a)
{
    memset(a, 0, sizeof(*a));
    a->text = arena_strdup(c->mem, s);
    if (strncmp(s, "unix:", 5) == 0) {
        const char *path = s + 5;
        struct sockaddr_un *un = (struct sockaddr_un *)&a->sa;
        if (path[0] != '/')
            return "a unix socket path must be absolute (unix:/run/ferry/ferry.sock)";
        if (strlen(path) >= sizeof(un->sun_path))
            return "the unix socket path is too long (at most 107 bytes)";
        a->is_unix = true;
        a->numeric = true;
        a->path = arena_strdup(c->mem, path);
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path, strlen(path) + 1);
        a->salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
        return NULL;
    }
    char host[256];
    const char *port;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || (size_t)(close - s - 1) >= sizeof(host))
            return "expected [IPv6]:port";
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = '\0';
        if (close[1] != ':')
            return "expected a port after the address: [IPv6]:port";
        port = close + 2;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->sa;
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
            return "not a valid IPv6 address";
        in6->sin6_family = AF_INET6;
        a->salen = sizeof(*in6);
        a->numeric = true;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon)
            return "expected host:port (like 127.0.0.1:8080), [IPv6]:port or unix:/path";
        if (memchr(s, ':', (size_t)(colon - s)))
            return "an IPv6 address needs brackets: [::1]:8080";
        if (colon == s)
            return "expected a host before the port (0.0.0.0:8080 for every IPv4 address)";
        if ((size_t)(colon - s) >= sizeof(host))
            return "the host name is too long";
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
        port = colon + 1;
        struct sockaddr_in *in = (struct sockaddr_in *)&a->sa;
        if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
            in->sin_family = AF_INET;
            a->salen = sizeof(*in);
            a->numeric = true;
        } else if (!names_ok) {
            return "expected an IP address (like 0.0.0.0:8080 or [::]:8080), names are not "
                   "resolved here";
        } else if (!valid_hostname(host)) {
            return "not a valid host name";
        } else {
            for (char *p = host; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                    *p = (char)(*p - 'A' + 'a');
        }
    }
    uint64_t pv;
    if (!parse_u64(port, &pv) || pv == 0 || pv > 65535)
        return "expected a port from 1 to 65535";
    a->port = (uint16_t)pv;
    a->host = arena_strdup(c->mem, host);
    if (a->sa.ss_family == AF_INET)
        ((struct sockaddr_in *)&a->sa)->sin_port = htons(a->port);
    else if (a->sa.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&a->sa)->sin6_port = htons(a->port);
    return NULL;
}

static bool get_addr(struct ctx *c, const struct ynode *n, const char *path, bool names_ok,
                     struct config_addr *a)
{
    char *s;
    if (!want_scalar(c, n, path, "an address (host:port, [IPv6]:port or unix:/path)") ||
        !get_string(c, n, path, &s))
        return false;
    const char *why = parse_addr(c, s, names_ok, a);
    if (why) {
        char q[QLEN];
        err(c, n, path, "%s, got %s", why, quote(q, sizeof(q), n->str, n->len));
        return false;
    }
    return true;
}

/* Parses "a.b.c.d[/n]" or "v6[/n]". Returns NULL or why it is bad;
 * *host_bits tells that bits beyond the prefix were set (and cleared). */
static const char *parse_cidr(const char *s, struct config_cidr *out, bool *host_bits)
{
    char addr[64];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (alen >= sizeof(addr))
        return "expected an address or CIDR like 10.0.0.0/8 or fd00::/8";
    memcpy(addr, s, alen);
    addr[alen] = '\0';
    memset(out, 0, sizeof(*out));
    unsigned maxbits;
    if (inet_pton(AF_INET, addr, out->addr) == 1) {
        out->family = AF_INET;
        maxbits = 32;
    } else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
        out->family = AF_INET6;
        maxbits = 128;
    } else {
        return "expected an address or CIDR like 10.0.0.0/8 or fd00::/8";
    }
    uint64_t bits = maxbits;
    if (slash && (!parse_u64(slash + 1, &bits) || bits > maxbits))
        return maxbits == 32 ? "the prefix length must be 0 to 32"
                             : "the prefix length must be 0 to 128";
    out->prefix = (uint8_t)bits;
    *host_bits = false;
    for (unsigned i = 0; i < maxbits / 8; i++) {
        unsigned keep = bits >= (i + 1) * 8 ? 8 : bits > i * 8 ? (unsigned)bits - i * 8 : 0;
        uint8_t mask = (uint8_t)(keep ? 0xff << (8 - keep) : 0);
        if (out->addr[i] & ~mask)
            *host_bits = true;
        out->addr[i] &= mask;
    }
    return NULL;
}

static void format_cidr(const struct config_cidr *cidr, char *buf, size_t size)
{
    char a[INET6_ADDRSTRLEN];
    inet_ntop(cidr->family, cidr->addr, a, sizeof(a));
    snprintf(buf, size, "%s/%u", a, cidr->prefix);
}

/* ---- stage 2: the schema ---- */

static const char *const TIMEOUT_KEYS[] = {"client_header",
                                           "client_body",
                                           "client_send",
                                           "client_idle",
                                           "upstream_connect",
                                           "upstream_header",
                                           "upstream_read",
                                           "upstream_send",
                                           "upstream_idle",
                                           "total",
                                           "tunnel_idle",
                                           NULL};

static int64_t *timeout_field(struct config_timeouts *t, size_t i)
{
    int64_t *f[] = {&t->client_header, &t->client_body,      &t->client_send,
                    &t->client_idle,   &t->upstream_connect, &t->upstream_header,
                    &t->upstream_read, &t->upstream_send,    &t->upstream_idle,
                    &t->total,         &t->tunnel_idle};
    return f[i];
}

/*
 * Why a timeout cannot be set per route (NULL: it can). These run before a
 * route is chosen or outside any one request.
 */
static const char *not_per_route(const char *key)
{
    if (streq(key, "client_header"))
        return "the request head is read before a route is chosen";
    if (streq(key, "client_idle"))
        return "a client connection is idle between requests, before any route is chosen";
    if (streq(key, "upstream_idle"))
        return "pooled upstream connections are shared by every route to the upstream";
    if (streq(key, "tunnel_idle"))
        return "WebSocket tunnels take the top-level value";
    return NULL;
}

/* Reads a timeouts mapping into *t; *set gets a bit per key present. A
 * route's mapping (route true) refuses the keys not_per_route names. */
NOINLINE static void load_timeouts(struct ctx *c, const struct ynode *n, const char *path,
                                   struct config_timeouts *t, unsigned *set, bool route)
{
    if (!want_map(c, n, path, "a mapping of timeouts (like upstream_header: 5s)"))
        return;
    const char *key;
    const struct ynode *v;
    char sub[PATHLEN];
    for (size_t i = 0; (key = next_key(c, n, path, TIMEOUT_KEYS, &i, &v, sub, sizeof(sub)));) {
        const char *why = route ? not_per_route(key) : NULL;
        if (why) {
            err(c, n->v[2 * i - 2], sub, "cannot be set per route (%s): set it in the top-level "
                "timeouts", why);
            continue;
        }
        for (size_t f = 0; TIMEOUT_KEYS[f]; f++) {
            if (key == TIMEOUT_KEYS[f]) {
                if (get_duration(c, v, sub, streq(key, "total"), timeout_field(t, f)))
                    *set |= 1u << f;
            }
        }
    }
}

/* limits.max_header_bytes: 1k up to what a read buffer can hold. */
static void get_header_bytes(struct ctx *c, const struct ynode *v, const char *path,
                             uint64_t *out)
{
    uint64_t b;
    if (!get_size(c, v, path, 1024, UINT64_MAX, &b))
        return;
    if (b > CONFIG_MAX_HEADER_BYTES_LIMIT) {
        err(c, v, path,
            "must be at most 128k (%u bytes), got %s (%llu bytes): a request head must fit in "
            "the 128 KiB buffer a client connection reads into",
            CONFIG_MAX_HEADER_BYTES_LIMIT, v->str, (unsigned long long)b);
        return;
    }
    *out = b;
}

NOINLINE static void load_limits(struct ctx *c, const struct ynode *n, const char *path)
{
    static const char *const keys[] = {"max_connections", "max_header_bytes", "max_headers",
                                       "max_body_bytes", NULL};
    struct config_limits *l = &c->cfg->limits;
    if (!want_map(c, n, path, "a mapping of limits"))
        return;
    const char *key;
    const struct ynode *v;
    char sub[PATHLEN];
    for (size_t i = 0; (key = next_key(c, n, path, keys, &i, &v, sub, sizeof(sub)));) {
        if (streq(key, "max_connections"))
            get_u32(c, v, sub, 1, 10000000, "a positive integer", &l->max_connections);
        else if (streq(key, "max_header_bytes"))
            get_header_bytes(c, v, sub, &l->max_header_bytes);
        else if (streq(key, "max_headers"))
            get_u32(c, v, sub, 1, 10000, "an integer from 1 to 10000", &l->max_headers);
        else if (streq(key, "max_body_bytes"))
            get_size(c, v, sub, 0, UINT64_MAX, &l->max_body_bytes);
    }
}

NOINLINE static void load_listen(struct ctx *c, const struct ynode *n, const char *path)
{
    static const char *const keys[] = {"address", "backlog", "proxy_protocol", "defer_accept",
                                       NULL};
    static const char *const later[] = {"tls", NULL};
    struct config *cfg = c->cfg;
    c->listen_seen = true;
    if (!want_seq(c, n, path, "a list of listeners (- address: 0.0.0.0:8080)"))
        return;
    size_t count = seq_items(n);
    cfg->listeners = arena_alloc(c->mem, (count ? count : 1) * sizeof(*cfg->listeners));
    const struct ynode **addr_nodes = arena_alloc(&c->tree, (count ? count : 1) * sizeof(void *));
    for (size_t i = 0; i < count; i++) {
        const struct ynode *item = n->v[i];
        char ipath[PATHLEN];
        idxpath(ipath, sizeof(ipath), path, i);
        struct config_listener *l = &cfg->listeners[cfg->nlisteners];
        l->backlog = 4096;
        l->defer_accept = true;
        if (item->kind != Y_MAP) {
            char d[QLEN];
            err(c, item, ipath, "expected a listener (a mapping with address:), got %s",
                describe(d, sizeof(d), item));
            continue;
        }
        const struct ynode *addr = NULL;
        bool ok = true;
        for (size_t j = 0; j < map_pairs(item); j++) {
            const struct ynode *k = item->v[2 * j], *v = item->v[2 * j + 1];
            c->last_suggestion = NULL;
            const char *key = lookup_key(c, k, ipath, keys, later);
            if (!key) {
                ok = false;
                if (c->last_suggestion && streq(c->last_suggestion, "address"))
                    addr = k;
                continue;
            }
            char sub[PATHLEN];
            subpath(sub, sizeof(sub), ipath, key);
            if (streq(key, "address")) {
                addr = v;
                ok &= get_addr(c, v, sub, false, &l->addr);
            } else if (streq(key, "backlog")) {
                ok &= get_u32(c, v, sub, 1, 1u << 20, "a positive integer", &l->backlog);
            } else if (streq(key, "proxy_protocol")) {
                ok &= get_bool(c, v, sub, &l->proxy_protocol);
            } else if (streq(key, "defer_accept")) {
                ok &= get_bool(c, v, sub, &l->defer_accept);
            }
        }
        if (!addr) {
            char sub[PATHLEN];
            subpath(sub, sizeof(sub), ipath, "address");
            err(c, item, sub, "required: the address to listen on (like 0.0.0.0:8080)");
            continue;
        }
        if (!ok)
            continue;
        for (size_t j = 0; j < cfg->nlisteners; j++) {
            if (cfg->listeners[j].addr.salen == l->addr.salen &&
                memcmp(&cfg->listeners[j].addr.sa, &l->addr.sa, l->addr.salen) == 0) {
                char sub[PATHLEN];
                subpath(sub, sizeof(sub), ipath, "address");
                err(c, addr, sub, "%s is already listened on (line %u)", l->addr.text,
                    addr_nodes[j]->line);
                ok = false;
                break;
            }
        }
        if (ok)
            addr_nodes[cfg->nlisteners++] = addr;
    }
}

NOINLINE static void load_trusted(struct ctx *c, const struct ynode *n, const char *path)
{
    struct config *cfg = c->cfg;
    if (!want_seq(c, n, path, "a list of addresses or CIDRs (like [10.0.0.0/8, ::1])"))
        return;
    size_t count = seq_items(n);
    cfg->trusted_proxies = arena_alloc(c->mem, (count ? count : 1) * sizeof(struct config_cidr));
    for (size_t i = 0; i < count; i++) {
        char ipath[PATHLEN];
        idxpath(ipath, sizeof(ipath), path, i);
        char *s;
        if (!get_string(c, n->v[i], ipath, &s))
            continue;
        bool host_bits;
        struct config_cidr *cidr = &cfg->trusted_proxies[cfg->ntrusted_proxies];
        const char *why = parse_cidr(s, cidr, &host_bits);
        char q[QLEN];
        if (why) {
            err(c, n->v[i], ipath, "%s, got %s", why, quote(q, sizeof(q), s, strlen(s)));
            continue;
        }
        if (host_bits) {
            char fixed[80];
            format_cidr(cidr, fixed, sizeof(fixed));
            warn(c, n->v[i], ipath, "%s has bits set beyond its prefix length; read as %s",
                 quote(q, sizeof(q), s, strlen(s)), fixed);
        }
        cfg->ntrusted_proxies++;
    }
}

static bool valid_host_header(const char *s)
{
    if (!*s)
        return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '/' || *p == '@' || *p == ',')
            return false;
    return true;
}

NOINLINE static void load_servers(struct ctx *c, const struct ynode *n, const char *path,
                                  struct config_upstream *u)
{
    static const char *const keys[] = {"address", "weight", NULL};
    if (n->kind != Y_SEQ || n->n == 0) {
        char d[QLEN];
        err(c, n, path, "expected a list of servers (- address: host:port), got %s",
            n->kind == Y_SEQ ? "an empty list" : describe(d, sizeof(d), n));
        return;
    }
    u->servers = arena_alloc(c->mem, n->n * sizeof(*u->servers));
    const struct ynode **addr_nodes = arena_alloc(&c->tree, n->n * sizeof(void *));
    for (size_t i = 0; i < n->n; i++) {
        const struct ynode *item = n->v[i];
        char ipath[PATHLEN];
        idxpath(ipath, sizeof(ipath), path, i);
        if (item->kind != Y_MAP) {
            char d[QLEN];
            err(c, item, ipath, "expected a server (a mapping with address:), got %s",
                describe(d, sizeof(d), item));
            continue;
        }
        struct config_server *s = &u->servers[u->nservers];
        s->weight = 1;
        const struct ynode *addr = NULL;
        bool ok = true;
        for (size_t j = 0; j < map_pairs(item); j++) {
            const struct ynode *k = item->v[2 * j], *v = item->v[2 * j + 1];
            c->last_suggestion = NULL;
            const char *key = lookup_key(c, k, ipath, keys, NULL);
            if (!key) {
                ok = false;
                if (c->last_suggestion && streq(c->last_suggestion, "address"))
                    addr = k;
                continue;
            }
            char sub[PATHLEN];
            subpath(sub, sizeof(sub), ipath, key);
            if (streq(key, "address")) {
                addr = v;
                ok &= get_addr(c, v, sub, true, &s->addr);
            } else if (streq(key, "weight")) {
                ok &= get_u32(c, v, sub, 1, 1000, "a positive integer", &s->weight);
            }
        }
        if (!addr) {
            char sub[PATHLEN];
            subpath(sub, sizeof(sub), ipath, "address");
            err(c, item, sub, "required: the server's host:port");
            continue;
        }
        if (!ok)
            continue;
        for (size_t j = 0; j < u->nservers; j++) {
            if (streq(u->servers[j].addr.text, s->addr.text)) {
                char sub[PATHLEN];
                subpath(sub, sizeof(sub), ipath, "address");
                err(c, addr, sub, "%s is already a server of this upstream (line %u)", s->addr.text,
                    addr_nodes[j]->line);
                ok = false;
                break;
            }
        }
        if (!ok)
            continue;
        s->index = (uint32_t)u->nservers;
        addr_nodes[u->nservers++] = addr;
    }
}

/* passive: { failures, eject_for } */
NOINLINE static void load_passive(struct ctx *c, const struct ynode *n, const char *path,
                                  struct config_upstream *u)
{
    static const char *const keys[] = {"failures", "eject_for", NULL};
    if (!want_map(c, n, path, "a mapping (failures, eject_for)"))
        return;
    u->passive_failures = 5;
    u->passive_eject_ms = 30000;
    const char *key;
    const struct ynode *v;
    char sub[PATHLEN];
    for (size_t i = 0; (key = next_key(c, n, path, keys, &i, &v, sub, sizeof(sub)));) {
        if (streq(key, "failures"))
            get_u32(c, v, sub, 1, 1000, "an integer from 1 to 1000", &u->passive_failures);
        else
            get_duration(c, v, sub, false, &u->passive_eject_ms);
    }
}

/* retries: { attempts, on: [connect_error, reset, timeout, 502, 503, 504] } */
NOINLINE static void load_retries(struct ctx *c, const struct ynode *n, const char *path,
                                  struct config_upstream *u)
{
    static const char *const keys[] = {"attempts", "on", "replay_bytes", NULL};
    static const char *const conds[] = {"connect_error", "reset", "timeout",
                                        "502",           "503",   "504", NULL};
    if (!want_map(c, n, path, "a mapping (attempts, on)"))
        return;
    u->retry_on = CONFIG_RETRY_CONNECT_ERROR | CONFIG_RETRY_RESET;
    const char *key;
    const struct ynode *v;
    char sub[PATHLEN];
    for (size_t i = 0; (key = next_key(c, n, path, keys, &i, &v, sub, sizeof(sub)));) {
        if (streq(key, "attempts")) {
            get_u32(c, v, sub, 0, 10, "an integer from 0 to 10", &u->retry_attempts);
            continue;
        }
        if (streq(key, "replay_bytes")) {
            get_size(c, v, sub, 0, 64u << 20, &u->replay_bytes);
            continue;
        }
        if (!want_seq(c, v, sub, "a list like [connect_error, reset, 502, 503, 504]"))
            continue;
        u->retry_on = 0;
        for (size_t j = 0; j < seq_items(v); j++) {
            char ipath[PATHLEN], q[QLEN];
            idxpath(ipath, sizeof(ipath), sub, j);
            const struct ynode *item = v->v[j];
            if (!want_scalar(c, item, ipath, "a retry condition"))
                continue;
            size_t f = 0;
            while (conds[f] && !streq(item->str, conds[f]))
                f++;
            if (conds[f]) {
                u->retry_on |= 1u << f;
                continue;
            }
            const char *near = nearest(item->str, conds, 6);
            err(c, item, ipath,
                "unknown retry condition %s (%s%s%s connect_error, reset, timeout, 502, 503 or "
                "504)",
                quote(q, sizeof(q), item->str, item->len), near ? "did you mean \"" : "expected",
                near ? near : "", near ? "\"? expected" : "");
        }
    }
}

NOINLINE static void load_upstream(struct ctx *c, const struct ynode *n, const char *path,
                                   struct config_upstream *u)
{
    static const char *const keys[] = {"servers",         "balance",     "keepalive",
                                       "max_connections", "host_header", "retries",
                                       "passive",         NULL};
    static const char *const later[] = {"hash_key", "tls", "health_check", NULL};
    static const char *const balances[] = {"round_robin", "least_conn", "random_two", "hash", NULL};
    u->keepalive = 64;
    u->retry_attempts = 1;
    u->retry_on = CONFIG_RETRY_CONNECT_ERROR;
    u->replay_bytes = 64u << 10;
    u->host_header = CONFIG_HOST_PRESERVE;
    u->balance = CONFIG_BALANCE_ROUND_ROBIN;
    if (n->kind != Y_MAP) {
        char d[QLEN];
        err(c, n, path, "expected an upstream (a mapping with servers:), got %s",
            describe(d, sizeof(d), n));
        return;
    }
    bool has_servers = false;
    for (size_t i = 0; i < map_pairs(n); i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        c->last_suggestion = NULL;
        const char *key = lookup_key(c, k, path, keys, later);
        if (!key) {
            /* a misspelt servers: was reported already */
            has_servers |= c->last_suggestion && streq(c->last_suggestion, "servers");
            continue;
        }
        char sub[512], q[96];
        subpath(sub, sizeof(sub), path, key);
        if (streq(key, "servers")) {
            has_servers = true;
            load_servers(c, v, sub, u);
        } else if (streq(key, "keepalive")) {
            get_u32(c, v, sub, 0, 100000, "an integer from 0 to 100000", &u->keepalive);
        } else if (streq(key, "max_connections")) {
            get_u32(c, v, sub, 0, 10000000, "an integer (0 = unlimited)", &u->max_connections);
        } else if (streq(key, "balance")) {
            if (!want_scalar(c, v, sub, "round_robin"))
                continue;
            if (streq(v->str, "round_robin"))
                continue;
            bool later_value = false;
            for (size_t b = 1; balances[b]; b++)
                later_value |= streq(v->str, balances[b]);
            if (later_value) {
                err(c, v, sub, "%s is not supported yet by this version of ferry",
                    quote(q, sizeof(q), v->str, v->len));
            } else {
                const char *near = nearest(v->str, balances, 4);
                if (near)
                    err(c, v, sub, "unknown balance %s (did you mean \"%s\"?)",
                        quote(q, sizeof(q), v->str, v->len), near);
                else
                    err(c, v, sub, "unknown balance %s (expected round_robin)",
                        quote(q, sizeof(q), v->str, v->len));
            }
        } else if (streq(key, "retries")) {
            load_retries(c, v, sub, u);
        } else if (streq(key, "passive")) {
            load_passive(c, v, sub, u);
        } else if (streq(key, "host_header")) {
            char *s;
            if (!get_string(c, v, sub, &s))
                continue;
            if (streq(s, "preserve")) {
                u->host_header = CONFIG_HOST_PRESERVE;
            } else if (streq(s, "upstream")) {
                u->host_header = CONFIG_HOST_UPSTREAM;
            } else if (valid_host_header(s)) {
                u->host_header = CONFIG_HOST_LITERAL;
                u->host_literal = s;
            } else {
                err(c, v, sub, "expected preserve, upstream or a host name, got %s",
                    quote(q, sizeof(q), v->str, v->len));
            }
        }
    }
    if (!has_servers) {
        char sub[PATHLEN];
        subpath(sub, sizeof(sub), path, "servers");
        err(c, n, sub, "required: at least one server (- address: host:port)");
    }
}

NOINLINE static void load_upstreams(struct ctx *c, const struct ynode *n, const char *path)
{
    struct config *cfg = c->cfg;
    if (!want_map(c, n, path, "a mapping of upstreams by name (api: {servers: [...]})"))
        return;
    size_t count = map_pairs(n);
    cfg->upstreams = arena_alloc(c->mem, (count ? count : 1) * sizeof(*cfg->upstreams));
    c->uaux = arena_alloc(&c->tree, (count ? count : 1) * sizeof(*c->uaux));
    for (size_t i = 0; i < count; i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        if (k->kind != Y_SCALAR || k->repeated)
            continue;
        char sub[512], q[96];
        subpath(sub, sizeof(sub), path, k->str);
        if (!valid_name(k)) {
            err(c, k, sub, "an upstream name is 1 to 64 letters, digits, '-', '_' or '.', got %s",
                quote(q, sizeof(q), k->str, k->len));
            continue;
        }
        struct config_upstream *u = &cfg->upstreams[cfg->nupstreams];
        u->name = arena_strndup(c->mem, k->str, k->len);
        u->index = (uint32_t)cfg->nupstreams;
        c->uaux[cfg->nupstreams].key = k;
        cfg->nupstreams++;
        load_upstream(c, v, sub, u);
    }
}

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

/*
 * A path in a route must be what routing compares against: the client's
 * path after dot-segment removal. Returns NULL or why it could never match.
 */
static const char *check_route_path(const char *p)
{
    if (p[0] != '/')
        return "a path starts with '/'";
    for (const char *q = p; *q; q++) {
        unsigned char ch = (unsigned char)*q;
        if (ch <= 0x20 || ch >= 0x7f || ch == '?' || ch == '#')
            return "a path holds no spaces, '?', '#' or non-ASCII bytes (percent-encode them)";
        if (ch == '/' && (q[1] == '/' || (q[1] == '.' && (q[2] == '/' || !q[2])) ||
                          (q[1] == '.' && q[2] == '.' && (q[3] == '/' || !q[3]))))
            return "not a normalised path ('//', '/./' or '/../'): it would never match";
    }
    return NULL;
}

static const char *const METHOD_NAMES[] = {"GET",     "HEAD",    "POST",  "PUT",   "DELETE",
                                           "CONNECT", "OPTIONS", "TRACE", "PATCH", NULL};

NOINLINE static void load_match(struct ctx *c, const struct ynode *n, const char *path,
                                struct config_route *r)
{
    static const char *const keys[] = {"host", "path", "path_prefix", "methods", NULL};
    static const char *const later[] = {"path_regex", "headers", NULL};
    struct config_match *m = &r->match;
    if (!want_map(c, n, path, "a mapping of conditions (host, path, path_prefix, methods)"))
        return;
    const struct ynode *path_node = NULL, *prefix_node = NULL;
    for (size_t i = 0; i < map_pairs(n); i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        const char *key = lookup_key(c, k, path, keys, later);
        if (!key)
            continue;
        char sub[512], q[96];
        subpath(sub, sizeof(sub), path, key);
        if (streq(key, "host")) {
            char *h;
            if (!get_string(c, v, sub, &h))
                continue;
            lower(h);
            size_t len = strlen(h);
            if (len > 1 && h[len - 1] == '.')
                h[--len] = '\0';
            const char *name = h;
            if (strncmp(h, "*.", 2) == 0) {
                m->host_wildcard = true;
                name = h + 2;
            }
            if (streq(h, "*")) {
                err(c, v, sub, "leave host out to match any host");
            } else if (strchr(name, ':') && name[0] != '[') {
                err(c, v, sub, "the host is matched without a port, got %s",
                    quote(q, sizeof(q), v->str, v->len));
            } else if (name[0] != '[' && !valid_hostname(name)) {
                err(c, v, sub,
                    "expected a host name like api.example.com or *.example.com, "
                    "got %s",
                    quote(q, sizeof(q), v->str, v->len));
            } else {
                m->host = m->host_wildcard ? h + 1 : h;
            }
        } else if (streq(key, "path") || streq(key, "path_prefix")) {
            char *p;
            if (!get_string(c, v, sub, &p))
                continue;
            const char *why = check_route_path(p);
            if (why) {
                err(c, v, sub, "%s, got %s", why, quote(q, sizeof(q), v->str, v->len));
                continue;
            }
            if (streq(key, "path")) {
                path_node = v;
                m->path = p;
            } else {
                prefix_node = v;
                m->path_prefix = p;
            }
        } else if (streq(key, "methods")) {
            if (v->kind != Y_SEQ || v->n == 0) {
                char d[QLEN];
                err(c, v, sub, "expected a list of methods (like [GET, POST]), got %s",
                    v->kind == Y_SEQ ? "an empty list" : describe(d, sizeof(d), v));
                continue;
            }
            m->methods = arena_alloc(c->mem, v->n * sizeof(char *));
            for (size_t j = 0; j < v->n; j++) {
                char ipath[PATHLEN];
                idxpath(ipath, sizeof(ipath), sub, j);
                char *meth;
                if (!get_string(c, v->v[j], ipath, &meth))
                    continue;
                if (!http1_token_ok(meth, strlen(meth))) {
                    err(c, v->v[j], ipath, "not a method name: %s",
                        quote(q, sizeof(q), v->v[j]->str, v->v[j]->len));
                    continue;
                }
                uint32_t bit = CONFIG_METHOD_OTHER;
                bool lower_case = false;
                for (size_t b = 0; METHOD_NAMES[b]; b++) {
                    if (streq(meth, METHOD_NAMES[b]))
                        bit = 1u << b;
                    else if (strcasecmp(meth, METHOD_NAMES[b]) == 0)
                        lower_case = true;
                }
                if (lower_case) {
                    char up[16];
                    snprintf(up, sizeof(up), "%s", meth);
                    for (char *p = up; *p; p++)
                        if (*p >= 'a' && *p <= 'z')
                            *p = (char)(*p - 'a' + 'A');
                    err(c, v->v[j], ipath, "methods are case-sensitive: %s (did you mean \"%s\"?)",
                        quote(q, sizeof(q), meth, strlen(meth)), up);
                    continue;
                }
                bool dup = false;
                for (size_t b = 0; b < m->nmethods; b++)
                    dup |= streq(m->methods[b], meth);
                if (dup) {
                    err(c, v->v[j], ipath, "%s is listed twice",
                        quote(q, sizeof(q), meth, strlen(meth)));
                    continue;
                }
                m->methods[m->nmethods++] = meth;
                m->method_mask |= bit;
            }
        }
    }
    if (path_node && prefix_node) {
        char sub[PATHLEN];
        const struct ynode *later_node =
            path_node->line > prefix_node->line ||
                    (path_node->line == prefix_node->line && path_node->col > prefix_node->col)
                ? path_node
                : prefix_node;
        subpath(sub, sizeof(sub), path, later_node == path_node ? "path" : "path_prefix");
        err(c, later_node, sub, "path and path_prefix exclude each other: keep one");
    }
}

NOINLINE static void load_respond(struct ctx *c, const struct ynode *n, const char *path,
                                  struct config_route *r)
{
    static const char *const keys[] = {"status", "body", "content_type", NULL};
    struct config_respond *resp = arena_alloc(c->mem, sizeof(*resp));
    resp->status = 200;
    resp->body = arena_strdup(c->mem, "");
    r->respond = resp;
    if (n->kind != Y_MAP) {
        char d[QLEN];
        err(c, n, path, "expected a mapping (status, body, content_type), got %s",
            describe(d, sizeof(d), n));
        return;
    }
    const char *key;
    const struct ynode *v;
    char sub[PATHLEN];
    for (size_t i = 0; (key = next_key(c, n, path, keys, &i, &v, sub, sizeof(sub)));) {
        if (streq(key, "status")) {
            uint32_t st;
            if (get_u32(c, v, sub, 200, 599, "an HTTP status from 200 to 599", &st))
                resp->status = (uint16_t)st;
        } else if (streq(key, "body")) {
            if (want_scalar(c, v, sub, "a string")) {
                resp->body = arena_strndup(c->mem, v->str, v->len);
                resp->body_len = v->len;
            }
        } else if (streq(key, "content_type")) {
            char *ct;
            if (!get_string(c, v, sub, &ct))
                continue;
            bool ok = *ct != '\0';
            for (const char *p = ct; *p; p++)
                ok &= (unsigned char)*p >= 0x20 && *p != 0x7f;
            if (!ok) {
                char q[QLEN];
                err(c, v, sub, "not a valid content type: %s", quote(q, sizeof(q), v->str, v->len));
                continue;
            }
            resp->content_type = ct;
        }
    }
}

/* Why a field name cannot be rewritten by a route, or NULL. */
static const char *unrewritable(const char *name, bool request)
{
    static const char *const framing[] = {"connection",       "content-length", "transfer-encoding",
                                          "upgrade",          "te",             "trailer",
                                          "keep-alive",       "proxy-connection", NULL};
    for (size_t i = 0; framing[i]; i++)
        if (strcasecmp(name, framing[i]) == 0)
            return "is not rewritable: Ferry frames messages and manages connections itself";
    if (request && strcasecmp(name, "host") == 0)
        return "is not rewritable here: the upstream's host_header sets the Host sent upstream";
    return NULL;
}

/* A field name from node k (a key or a list item) into *out; false after
 * an error. */
static bool get_field_name(struct ctx *c, const struct ynode *k, const char *path, bool request,
                           struct http1_header *out)
{
    char q[QLEN];
    if (!want_scalar(c, k, path, "a header name"))
        return false;
    if (k->len > 256 || !http1_token_ok(k->str, k->len)) {
        err(c, k, path, "not a valid header name: %s", quote(q, sizeof(q), k->str, k->len));
        return false;
    }
    const char *why = unrewritable(k->str, request);
    if (why) {
        err(c, k, path, "%s %s", quote(q, sizeof(q), k->str, k->len), why);
        return false;
    }
    out->name = arena_strndup(c->mem, k->str, k->len);
    out->name_len = k->len;
    return true;
}

/* set: / add: — a mapping of header name to value. */
static void load_header_map(struct ctx *c, const struct ynode *n, const char *path, bool request,
                            struct http1_header **out, size_t *count)
{
    if (!want_map(c, n, path, "a mapping of header names to values (X-Name: value)"))
        return;
    *out = arena_alloc(c->mem, (map_pairs(n) ? map_pairs(n) : 1) * sizeof(**out));
    for (size_t i = 0; i < map_pairs(n); i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        char sub[PATHLEN], q[QLEN];
        subpath(sub, sizeof(sub), path, k->kind == Y_SCALAR ? k->str : "?");
        struct http1_header *h = &(*out)[*count];
        if (!get_field_name(c, k, sub, request, h))
            continue;
        if (!want_scalar(c, v, sub, "a header value"))
            continue;
        bool ok = v->len <= 4096 && http1_field_text_ok(v->str, v->len);
        if (ok && v->len > 0)
            ok = !strchr(" \t", v->str[0]) && !strchr(" \t", v->str[v->len - 1]);
        if (!ok) {
            err(c, v, sub,
                "not a valid header value (at most 4096 characters, no control characters, "
                "no leading or trailing blanks): %s",
                quote(q, sizeof(q), v->str, v->len));
            continue;
        }
        h->value = arena_strndup(c->mem, v->str, v->len);
        h->value_len = v->len;
        (*count)++;
    }
}

NOINLINE static void load_header_rules(struct ctx *c, const struct ynode *n, const char *path,
                                       bool request, struct config_header_rules *rules)
{
    static const char *const keys[] = {"set", "add", "remove", NULL};
    if (!want_map(c, n, path, "a mapping (set, add, remove)"))
        return;
    const char *key;
    const struct ynode *v;
    char sub[PATHLEN];
    for (size_t i = 0; (key = next_key(c, n, path, keys, &i, &v, sub, sizeof(sub)));) {
        if (streq(key, "set")) {
            load_header_map(c, v, sub, request, &rules->set, &rules->nset);
        } else if (streq(key, "add")) {
            load_header_map(c, v, sub, request, &rules->add, &rules->nadd);
        } else if (want_seq(c, v, sub, "a list of header names ([X-Debug, Server])")) {
            size_t count = seq_items(v);
            rules->remove = arena_alloc(c->mem, (count ? count : 1) * sizeof(*rules->remove));
            for (size_t j = 0; j < count; j++) {
                char ipath[PATHLEN];
                idxpath(ipath, sizeof(ipath), sub, j);
                if (get_field_name(c, v->v[j], ipath, request, &rules->remove[rules->nremove]))
                    rules->nremove++;
            }
        }
    }
    /* A name set twice (YAML keys are unique per mapping, so only case
     * differs) is an error; one both set and removed is set. */
    for (size_t i = 0; i < rules->nset; i++) {
        for (size_t j = 0; j < i; j++)
            if (strcasecmp(rules->set[i].name, rules->set[j].name) == 0)
                err(c, n, path, "%s and %s are the same header (names are case-insensitive): set "
                    "it once, or use add for a second field", rules->set[j].name, rules->set[i].name);
        for (size_t j = 0; j < rules->nremove; j++)
            if (strcasecmp(rules->set[i].name, rules->remove[j].name) == 0)
                warn(c, n, path, "%s is both set and removed: it is set", rules->set[i].name);
    }
}

NOINLINE static void load_route(struct ctx *c, const struct ynode *n, const char *path,
                                struct config_route *r, struct route_aux *aux)
{
    static const char *const keys[] = {"name",           "match",           "upstream",
                                       "strip_prefix",   "add_prefix",      "respond",
                                       "max_body_bytes", "timeouts",        "request_headers",
                                       "response_headers", "underscores_in_headers",
                                       "reject_path_params", NULL};
    static const char *const later[] = {"request_buffering",
                                        "response_buffering",
                                        "rate_limit",
                                        "auth",
                                        NULL};
    aux->node = n;
    if (n->kind != Y_MAP) {
        aux->quiet_name = true;
        char d[QLEN];
        err(c, n, path, "expected a route (a mapping with match: and upstream:), got %s",
            describe(d, sizeof(d), n));
        return;
    }
    const struct ynode *respond_node = NULL, *strip_node = NULL, *request_rules_node = NULL;
    for (size_t i = 0; i < map_pairs(n); i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        const char *key = lookup_key(c, k, path, keys, later);
        if (!key)
            continue;
        char sub[512], q[96];
        subpath(sub, sizeof(sub), path, key);
        if (streq(key, "name")) {
            aux->quiet_name = true;
            if (!want_scalar(c, v, sub, "a name"))
                continue;
            if (!valid_name(v)) {
                err(c, v, sub, "a route name is 1 to 64 letters, digits, '-', '_' or '.', got %s",
                    quote(q, sizeof(q), v->str, v->len));
                continue;
            }
            r->name = arena_strndup(c->mem, v->str, v->len);
        } else if (streq(key, "match")) {
            load_match(c, v, sub, r);
        } else if (streq(key, "upstream")) {
            if (!want_scalar(c, v, sub, "the name of an upstream"))
                continue;
            aux->upstream_node = v;
            aux->upstream_name = v->str;
        } else if (streq(key, "strip_prefix") || streq(key, "add_prefix")) {
            char *p;
            if (!get_string(c, v, sub, &p))
                continue;
            const char *why = check_route_path(p);
            if (why) {
                err(c, v, sub, "%s, got %s", why, quote(q, sizeof(q), v->str, v->len));
                continue;
            }
            if (streq(key, "strip_prefix")) {
                strip_node = v;
                r->strip_prefix = p;
            } else {
                r->add_prefix = p;
            }
        } else if (streq(key, "respond")) {
            respond_node = k;
            load_respond(c, v, sub, r);
        } else if (streq(key, "max_body_bytes")) {
            if (get_size(c, v, sub, 0, UINT64_MAX, &r->max_body_bytes))
                aux->has_max_body = true;
        } else if (streq(key, "timeouts")) {
            load_timeouts(c, v, sub, &aux->timeouts, &aux->timeouts_set, true);
        } else if (streq(key, "request_headers")) {
            request_rules_node = k;
            load_header_rules(c, v, sub, true, &r->request_headers);
        } else if (streq(key, "response_headers")) {
            load_header_rules(c, v, sub, false, &r->response_headers);
        } else if (streq(key, "underscores_in_headers")) {
            get_bool(c, v, sub, &r->underscores_in_headers);
        } else if (streq(key, "reject_path_params")) {
            get_bool(c, v, sub, &r->reject_path_params);
        }
    }
    if (respond_node && request_rules_node) {
        char sub[PATHLEN];
        subpath(sub, sizeof(sub), path, "request_headers");
        warn(c, request_rules_node, sub, "has no effect on a respond route");
    }
    if (respond_node && aux->upstream_node) {
        char sub[PATHLEN];
        subpath(sub, sizeof(sub), path, "respond");
        err(c, respond_node, sub, "a route has either upstream or respond, not both");
    } else if (!respond_node && !aux->upstream_node) {
        err(c, n, path, "a route needs upstream: (where to proxy) or respond: (a fixed answer)");
    }
    if (respond_node && (strip_node || r->add_prefix)) {
        char sub[PATHLEN];
        subpath(sub, sizeof(sub), path, strip_node ? "strip_prefix" : "add_prefix");
        warn(c, respond_node, sub, "has no effect on a respond route");
    }
    if (strip_node && r->match.path_prefix) {
        const char *sp = r->strip_prefix, *pp = r->match.path_prefix;
        size_t sl = strlen(sp);
        if (strncmp(pp, sp, sl) != 0) {
            char sub[PATHLEN];
            subpath(sub, sizeof(sub), path, "strip_prefix");
            warn(c, strip_node, sub, "%s is not a prefix of path_prefix %s: nothing is stripped",
                 sp, pp);
        }
    }
}

NOINLINE static void load_routes(struct ctx *c, const struct ynode *n, const char *path)
{
    struct config *cfg = c->cfg;
    if (!want_seq(c, n, path, "a list of routes (- match: ... upstream: ...)"))
        return;
    size_t count = seq_items(n);
    if (count > CONFIG_MAX_ROUTES) {
        err(c, n, path, "more than %d routes", CONFIG_MAX_ROUTES);
        return;
    }
    cfg->routes = arena_alloc(c->mem, (count ? count : 1) * sizeof(*cfg->routes));
    c->raux = arena_alloc(&c->tree, (count ? count : 1) * sizeof(*c->raux));
    for (size_t i = 0; i < count; i++) {
        char ipath[PATHLEN];
        idxpath(ipath, sizeof(ipath), path, i);
        struct config_route *r = &cfg->routes[i];
        r->index = (uint32_t)i;
        load_route(c, n->v[i], ipath, r, &c->raux[i]);
    }
    cfg->nroutes = count;
}

NOINLINE static void load_access_log(struct ctx *c, const struct ynode *n, const char *path)
{
    static const char *const keys[] = {"path", "format", NULL};
    struct config_access_log *al = &c->cfg->access_log;
    if (!want_map(c, n, path, "a mapping (path, format)"))
        return;
    al->path = arena_strdup(c->mem, "stderr");
    for (size_t i = 0; i < map_pairs(n); i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        const char *key = lookup_key(c, k, path, keys, NULL);
        if (!key)
            continue;
        char sub[512], q[96];
        subpath(sub, sizeof(sub), path, key);
        char *s;
        if (!get_string(c, v, sub, &s))
            continue;
        if (streq(key, "path")) {
            if (!streq(s, "stderr") && s[0] != '/')
                err(c, v, sub, "expected stderr or an absolute path, got %s",
                    quote(q, sizeof(q), v->str, v->len));
            else
                al->path = s;
        } else if (streq(s, "json")) {
            al->format = CONFIG_LOG_JSON;
        } else if (streq(s, "combined")) {
            al->format = CONFIG_LOG_COMBINED;
        } else {
            static const char *const formats[] = {"json", "combined", NULL};
            const char *near = nearest(s, formats, 2);
            err(c, v, sub, "expected json or combined, got %s%s%s%s",
                quote(q, sizeof(q), v->str, v->len), near ? " (did you mean \"" : "",
                near ? near : "", near ? "\"?)" : "");
        }
    }
}

NOINLINE static void load_error_log(struct ctx *c, const struct ynode *n, const char *path)
{
    static const char *const keys[] = {"level", NULL};
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    if (!want_map(c, n, path, "a mapping (level)"))
        return;
    for (size_t i = 0; i < map_pairs(n); i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        if (!lookup_key(c, k, path, keys, NULL))
            continue;
        char sub[512], q[96];
        subpath(sub, sizeof(sub), path, "level");
        if (!want_scalar(c, v, sub, "debug, info, warn or error"))
            continue;
        bool found = false;
        for (size_t l = 0; levels[l]; l++) {
            if (streq(v->str, levels[l])) {
                c->cfg->error_log_level = (enum log_level)l;
                found = true;
            }
        }
        if (!found) {
            const char *near = nearest(v->str, levels, 4);
            err(c, v, sub, "expected debug, info, warn or error, got %s%s%s%s",
                quote(q, sizeof(q), v->str, v->len), near ? " (did you mean \"" : "",
                near ? near : "", near ? "\"?)" : "");
        }
    }
}

NOINLINE static void load_admin(struct ctx *c, const struct ynode *n, const char *path)
{
    static const char *const keys[] = {"listen", NULL};
    if (!want_map(c, n, path, "a mapping (listen)"))
        return;
    for (size_t i = 0; i < map_pairs(n); i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        if (!lookup_key(c, k, path, keys, NULL))
            continue;
        char sub[PATHLEN];
        subpath(sub, sizeof(sub), path, "listen");
        struct config_addr *a = arena_alloc(c->mem, sizeof(*a));
        if (get_addr(c, v, sub, false, a))
            c->cfg->admin_listen = a;
    }
}

NOINLINE static void load_root(struct ctx *c, const struct ynode *root)
{
    static const char *const keys[] = {"workers",          "coroutine_stack", "max_requests",
                                       "shutdown_timeout", "pid_file",        "trusted_proxies",
                                       "listen",           "timeouts",        "limits",
                                       "upstreams",        "routes",          "access_log",
                                       "error_log",        "admin",           NULL};
    static const char *const later[] = {"user", NULL};
    struct config *cfg = c->cfg;
    for (size_t i = 0; i < map_pairs(root); i++) {
        const struct ynode *k = root->v[2 * i], *v = root->v[2 * i + 1];
        c->last_suggestion = NULL;
        const char *key = lookup_key(c, k, "", keys, later);
        if (!key) {
            c->listen_seen |= c->last_suggestion && streq(c->last_suggestion, "listen");
            continue;
        }
        if (streq(key, "workers")) {
            if (v->kind == Y_SCALAR && streq(v->str, "auto"))
                cfg->workers = 0;
            else
                get_u32(c, v, key, 1, 1024, "auto or an integer from 1 to 1024", &cfg->workers);
        } else if (streq(key, "coroutine_stack")) {
            get_size(c, v, key, 16 << 10, 64 << 20, &cfg->coroutine_stack);
        } else if (streq(key, "max_requests")) {
            get_u32(c, v, key, 1, 1000000, "an integer from 1 to 1000000", &cfg->max_requests);
        } else if (streq(key, "shutdown_timeout")) {
            get_duration(c, v, key, true, &cfg->shutdown_timeout);
        } else if (streq(key, "pid_file")) {
            char *s;
            if (is_null(v))
                cfg->pid_file = NULL;
            else if (!get_string(c, v, key, &s))
                continue;
            else if (s[0] != '/')
                err(c, v, key, "expected an absolute path, got \"%s\"", s);
            else
                cfg->pid_file = s;
        } else if (streq(key, "trusted_proxies")) {
            load_trusted(c, v, key);
        } else if (streq(key, "listen")) {
            load_listen(c, v, key);
        } else if (streq(key, "timeouts")) {
            unsigned set = 0;
            load_timeouts(c, v, key, &cfg->timeouts, &set, false);
        } else if (streq(key, "limits")) {
            load_limits(c, v, key);
        } else if (streq(key, "upstreams")) {
            load_upstreams(c, v, key);
        } else if (streq(key, "routes")) {
            load_routes(c, v, key);
        } else if (streq(key, "access_log")) {
            load_access_log(c, v, key);
        } else if (streq(key, "error_log")) {
            load_error_log(c, v, key);
        } else if (streq(key, "admin")) {
            load_admin(c, v, key);
        }
    }
}

static void set_defaults(struct config *cfg)
{
    cfg->workers = 0;
    cfg->coroutine_stack = 64 << 10;
    cfg->max_requests = 20000;
    cfg->shutdown_timeout = 30000;
    cfg->timeouts = (struct config_timeouts){
        .client_header = 10000,
        .client_body = 30000,
        .client_send = 60000,
        .client_idle = 60000,
        .upstream_connect = 2000,
        .upstream_header = 30000,
        .upstream_read = 60000,
        .upstream_send = 60000,
        .upstream_idle = 4000,
        .total = 0,
        .tunnel_idle = 3600000,
    };
    cfg->limits = (struct config_limits){
        .max_connections = 100000,
        .max_header_bytes = 32 << 10,
        .max_headers = 100,
        .max_body_bytes = 10 << 20,
    };
    cfg->access_log.path = NULL;
    cfg->access_log.format = CONFIG_LOG_JSON;
    cfg->error_log_level = CONFIG_LOG_INFO;
}

/* ---- stage 3: cross checks ---- */

static int upstream_name_cmp(const void *a, const void *b)
{
    const struct config_upstream *x = *(const struct config_upstream *const *)a;
    const struct config_upstream *y = *(const struct config_upstream *const *)b;
    return strcmp(x->name, y->name);
}

struct route_ref {
    const char *name;
    size_t index;
};

static int route_ref_cmp(const void *a, const void *b)
{
    const struct route_ref *x = a, *y = b;
    int r = strcmp(x->name, y->name);
    if (r)
        return r;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* True when prefix p matches path q at a segment boundary. */
static bool prefix_covers(const char *p, const char *q)
{
    size_t lp = strlen(p);
    if (strncmp(p, q, lp) != 0)
        return false;
    return q[lp] == '\0' || p[lp - 1] == '/' || q[lp] == '/';
}

/* True when route a matches every request that route b matches. */
static bool route_covers(const struct config_route *a, const struct config_route *b)
{
    const struct config_match *x = &a->match, *y = &b->match;
    if (x->host) {
        if (!y->host)
            return false;
        if (!x->host_wildcard) {
            if (y->host_wildcard || !streq(x->host, y->host))
                return false;
        } else {
            size_t lx = strlen(x->host), ly = strlen(y->host);
            if (ly < lx || !streq(y->host + ly - lx, x->host))
                return false;
            if (!y->host_wildcard && ly == lx)
                return false;
        }
    }
    if (x->nmethods) {
        if (!y->nmethods)
            return false;
        for (size_t i = 0; i < y->nmethods; i++) {
            bool found = false;
            for (size_t j = 0; j < x->nmethods && !found; j++)
                found = streq(x->methods[j], y->methods[i]);
            if (!found)
                return false;
        }
    }
    if (x->path) {
        return y->path && streq(x->path, y->path);
    }
    if (x->path_prefix) {
        if (y->path)
            return prefix_covers(x->path_prefix, y->path);
        if (y->path_prefix)
            return prefix_covers(x->path_prefix, y->path_prefix);
        return false;
    }
    return true;
}

NOINLINE static void cross_check(struct ctx *c)
{
    struct config *cfg = c->cfg;
    /* upstream names, sorted for lookups */
    const struct config_upstream **sorted =
        arena_alloc(&c->tree, (cfg->nupstreams + 1) * sizeof(*sorted));
    const char **names = arena_alloc(&c->tree, (cfg->nupstreams + 1) * sizeof(*names));
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        sorted[i] = &cfg->upstreams[i];
        names[i] = cfg->upstreams[i].name;
    }
    qsort(sorted, cfg->nupstreams, sizeof(*sorted), upstream_name_cmp);

    for (size_t i = 0; i < cfg->nroutes; i++) {
        struct config_route *r = &cfg->routes[i];
        struct route_aux *aux = &c->raux[i];
        r->timeouts = cfg->timeouts;
        for (size_t f = 0; TIMEOUT_KEYS[f]; f++)
            if (aux->timeouts_set & (1u << f))
                *timeout_field(&r->timeouts, f) = *timeout_field(&aux->timeouts, f);
        if (!aux->has_max_body)
            r->max_body_bytes = cfg->limits.max_body_bytes;
        if (!aux->upstream_name)
            continue;
        struct config_upstream key = {.name = aux->upstream_name};
        const struct config_upstream *kp = &key;
        const struct config_upstream **found =
            bsearch(&kp, sorted, cfg->nupstreams, sizeof(*sorted), upstream_name_cmp);
        if (found) {
            r->upstream = *found;
            c->uaux[(*found)->index].used = true;
            continue;
        }
        char path[512], q[96];
        snprintf(path, sizeof(path), "routes[%zu].upstream", i);
        quote(q, sizeof(q), aux->upstream_node->str, aux->upstream_node->len);
        const char *near = c->nerrors < CONFIG_MAX_ERRORS
                               ? nearest(aux->upstream_name, names, cfg->nupstreams)
                               : NULL;
        if (near)
            err(c, aux->upstream_node, path, "unknown upstream %s (did you mean \"%s\"?)", q, near);
        else if (cfg->nupstreams)
            err(c, aux->upstream_node, path, "unknown upstream %s: not in upstreams:", q);
        else
            err(c, aux->upstream_node, path, "unknown upstream %s: no upstreams: are defined", q);
    }

    /* names: given ones first, then derived ones that do not collide */
    struct route_ref *refs = arena_alloc(&c->tree, (cfg->nroutes + 1) * sizeof(*refs));
    size_t nrefs = 0;
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (cfg->routes[i].name)
            refs[nrefs++] = (struct route_ref){cfg->routes[i].name, i};
    qsort(refs, nrefs, sizeof(*refs), route_ref_cmp);
    for (size_t i = 1; i < nrefs; i++) {
        if (streq(refs[i].name, refs[i - 1].name)) {
            size_t first = i - 1;
            while (first > 0 && streq(refs[first - 1].name, refs[i].name))
                first--;
            char path[512], q[96];
            snprintf(path, sizeof(path), "routes[%zu].name", refs[i].index);
            const struct ynode *rn = c->raux[refs[i].index].node;
            const struct ynode *at = rn;
            for (size_t j = 0; rn->kind == Y_MAP && j + 1 < rn->n; j += 2)
                if (rn->v[j]->kind == Y_SCALAR && streq(rn->v[j]->str, "name"))
                    at = rn->v[j + 1];
            err(c, at, path, "route name %s is already used by routes[%zu] (line %u)",
                quote(q, sizeof(q), refs[i].name, strlen(refs[i].name)), refs[first].index,
                c->raux[refs[first].index].node->line);
        }
    }
    for (size_t i = 0; i < cfg->nroutes; i++) {
        struct config_route *r = &cfg->routes[i];
        if (r->name)
            continue;
        char name[32];
        snprintf(name, sizeof(name), "route-%zu", i + 1);
        struct route_ref key = {name, 0};
        bool taken = false;
        for (size_t lo = 0, hi = nrefs; lo < hi && !taken;) {
            size_t mid = (lo + hi) / 2;
            int cmp = strcmp(name, refs[mid].name);
            if (cmp == 0)
                taken = true;
            else if (cmp < 0)
                hi = mid;
            else
                lo = mid + 1;
        }
        (void)key;
        r->name = arena_strdup(c->mem, name);
        r->name_derived = true;
        char path[PATHLEN];
        snprintf(path, sizeof(path), "routes[%zu]", i);
        if (taken)
            err(c, c->raux[i].node, path,
                "this route has no name and its derived name \"%s\" is taken by another route",
                name);
        else if (!c->raux[i].quiet_name)
            warn(c, c->raux[i].node, path,
                 "no name: called \"%s\" from its position; give it a name so metrics and "
                 "limits keep their meaning when routes move",
                 name);
    }

    /* shadowing: bounded by CONFIG_MAX_ROUTES squared, cheap comparisons */
    for (size_t j = 1; j < cfg->nroutes && c->nerrors == 0; j++) {
        for (size_t i = 0; i < j; i++) {
            if (route_covers(&cfg->routes[i], &cfg->routes[j])) {
                char path[PATHLEN];
                snprintf(path, sizeof(path), "routes[%zu]", j);
                warn(c, c->raux[j].node, path,
                     "route \"%s\" can never match: route \"%s\" (line %u) comes first and "
                     "matches every request it would",
                     cfg->routes[j].name, cfg->routes[i].name, c->raux[i].node->line);
                break;
            }
        }
    }

    /* with errors, a route naming a misspelt upstream would make noise here */
    for (size_t i = 0; i < cfg->nupstreams && c->nerrors == 0; i++) {
        if (c->uaux[i].used)
            continue;
        char path[PATHLEN];
        subpath(path, sizeof(path), "upstreams", cfg->upstreams[i].name);
        warn(c, c->uaux[i].key, path, "upstream \"%s\" is not used by any route",
             cfg->upstreams[i].name);
    }
}

/* ---- public ---- */

struct config_box {
    struct config cfg;
    struct arena mem;
};

static int load(struct ctx *c, struct config **out, FILE *diag)
{
    struct config_box *box = calloc(1, sizeof(*box));
    if (!box)
        oom();
    c->mem = &box->mem;
    c->cfg = &box->cfg;
    set_defaults(c->cfg);
    c->cfg->refs_ = 1;
    c->cfg->path = arena_strdup(c->mem, c->name);

    struct builder *b = arena_alloc(&c->tree, sizeof(*b));
    b->c = c;
    if (build_tree(b) == 0) {
        const struct ynode *root = b->root;
        c->root = root;
        if (!root || is_null(root)) {
            err_at(c, 1, 1, "", "the file holds no settings: at least listen: is required");
        } else if (root->kind != Y_MAP) {
            char d[QLEN];
            err(c, root, "", "expected a mapping of settings (listen:, routes:, ...), got %s",
                describe(d, sizeof(d), root));
        } else {
            load_root(c, root);
            if (!c->listen_seen || c->cfg->nlisteners == 0) {
                if (!c->listen_seen)
                    err(c, root, "listen",
                        "required: at least one listener (- address: 0.0.0.0:8080)");
                else if (c->nerrors == 0)
                    err(c, root, "listen", "required: at least one listener");
            }
            cross_check(c);
            if (c->nerrors == 0 && c->cfg->nroutes == 0)
                warn(c, root, "routes", "no routes: every request gets 404");
        }
    }
    int rc = c->nerrors ? -1 : 0;
    c->cfg->nwarnings = c->nwarnings;
    print_diags(c, diag);
    arena_fini(&c->tree);
    if (rc != 0) {
        arena_fini(&box->mem);
        free(box);
        *out = NULL;
        return -1;
    }
    *out = &box->cfg;
    return 0;
}

int config_load_string(const char *name, const char *data, size_t len, struct config **out,
                       FILE *diag)
{
    struct ctx c = {.name = name, .src = data, .srclen = len};
    *out = NULL;
    /* a UTF-8 byte order mark: libyaml only skips it when it guesses the
     * encoding, and we insist on UTF-8 */
    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0) {
        c.src += 3;
        c.srclen -= 3;
    }
    if (len > CONFIG_MAX_FILE_BYTES) {
        if (diag)
            fprintf(diag, "%s: too large (%zu bytes; a config file is at most %u MiB)\n", name, len,
                    CONFIG_MAX_FILE_BYTES >> 20);
        return -1;
    }
    return load(&c, out, diag);
}

int config_load(const char *path, struct config **out, FILE *diag)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        if (diag)
            fprintf(diag, "%s: cannot open: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode) ||
        (S_ISREG(st.st_mode) && (uint64_t)st.st_size > CONFIG_MAX_FILE_BYTES)) {
        if (diag) {
            if (S_ISDIR(st.st_mode))
                fprintf(diag, "%s: is a directory, not a config file\n", path);
            else
                fprintf(diag, "%s: too large (%lld bytes; a config file is at most %u MiB)\n", path,
                        (long long)st.st_size, CONFIG_MAX_FILE_BYTES >> 20);
        }
        close(fd);
        return -1;
    }
    /* read at most the limit + 1 (a FIFO or a device has no size) */
    size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        oom();
    for (;;) {
        if (len == cap) {
            if (cap > CONFIG_MAX_FILE_BYTES)
                break;
            cap *= 2;
            char *grown = realloc(buf, cap);
            if (!grown)
                oom();
            buf = grown;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (diag)
                fprintf(diag, "%s: cannot read: %s\n", path, strerror(errno));
            free(buf);
            close(fd);
            return -1;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > CONFIG_MAX_FILE_BYTES)
            break;
    }
    close(fd);
    int rc = config_load_string(path, buf, len, out, diag);
    free(buf);
    return rc;
}

struct config *config_ref(struct config *cfg)
{
    __atomic_add_fetch(&cfg->refs_, 1, __ATOMIC_RELAXED);
    return cfg;
}

void config_unref(struct config *cfg)
{
    if (!cfg)
        return;
    if (__atomic_sub_fetch(&cfg->refs_, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    struct config_box *box = (struct config_box *)cfg;
    arena_fini(&box->mem);
    free(box);
}

static bool cidr_contains(const struct config_cidr *cidr, const uint8_t *addr)
{
    unsigned bits = cidr->prefix;
    unsigned full = bits / 8, rest = bits % 8;
    if (memcmp(cidr->addr, addr, full) != 0)
        return false;
    if (!rest)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (addr[full] & mask) == cidr->addr[full];
}

bool config_trusted(const struct config *cfg, const struct sockaddr *sa)
{
    uint8_t addr[16];
    int family = sa->sa_family;
    if (family == AF_UNIX)
        return true;
    if (family == AF_INET) {
        memcpy(addr, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    } else if (family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            family = AF_INET;
            memcpy(addr, a6->s6_addr + 12, 4);
        } else {
            memcpy(addr, a6->s6_addr, 16);
        }
    } else {
        return false;
    }
    for (size_t i = 0; i < cfg->ntrusted_proxies; i++)
        if (cfg->trusted_proxies[i].family == family &&
            cidr_contains(&cfg->trusted_proxies[i], addr))
            return true;
    return false;
}

const struct config_upstream *config_upstream_find(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nupstreams; i++)
        if (streq(cfg->upstreams[i].name, name))
            return &cfg->upstreams[i];
    return NULL;
}

const struct config_route *config_route_find(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (streq(cfg->routes[i].name, name))
            return &cfg->routes[i];
    return NULL;
}

bool config_route_allows_method(const struct config_route *route, const char *method, size_t len)
{
    if (route->match.nmethods == 0)
        return true;
    for (size_t i = 0; i < route->match.nmethods; i++)
        if (strlen(route->match.methods[i]) == len &&
            memcmp(route->match.methods[i], method, len) == 0)
            return true;
    return false;
}
