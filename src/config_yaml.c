/*
 * config_yaml: the YAML tree with anchors and the diagnostics of a config
 * load (see config_internal.h for the split of the module).
 */
#include "config.h"
#include "config_internal.h"

#include <stdlib.h>
#include <strings.h>
#include <yaml.h>

/* ---- arena: everything of one config (or one parse tree) freed at once ---- */

struct arena_block {
    struct arena_block *next;
    size_t used, size;
    max_align_t data[];
};

void cfg_oom(void)
{
    fputs("ferry: config: out of memory\n", stderr);
    abort();
}

void *cfg_alloc(struct arena *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    struct arena_block *b = a->head;
    if (!b || b->size - b->used < size) {
        size_t bsize = size > 32768 ? size : 32768;
        b = malloc(sizeof(*b) + bsize);
        if (!b)
            cfg_oom();
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

char *cfg_strndup(struct arena *a, const char *s, size_t len)
{
    char *p = cfg_alloc(a, len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *cfg_strdup(struct arena *a, const char *s)
{
    return cfg_strndup(a, s, strlen(s));
}

void cfg_arena_fini(struct arena *a)
{
    struct arena_block *b = a->head;
    while (b) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}

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
        struct diag *d = cfg_alloc(&c->tree, cap * sizeof(*d));
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
    d->path = cfg_strdup(&c->tree, path ? path : "");
    d->msg = cfg_strdup(&c->tree, msg);
}

__attribute__((format(printf, 4, 5))) void cfg_err(struct ctx *c, const struct ynode *at,
                                                   const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vadd_diag(c, false, at ? at->line : 0, at ? at->col : 0, path, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 4, 5))) void cfg_warn(struct ctx *c, const struct ynode *at,
                                                    const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vadd_diag(c, true, at ? at->line : 0, at ? at->col : 0, path, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 5, 6))) void cfg_err_at(struct ctx *c, uint32_t line, uint32_t col,
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

void cfg_print_diags(struct ctx *c, FILE *f)
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

/* Writes s as a double-quoted, escaped, possibly shortened string. */
const char *cfg_quote(char *buf, size_t size, const char *s, size_t len)
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

bool cfg_is_null(const struct ynode *n)
{
    if (n->kind != Y_SCALAR || n->quoted)
        return false;
    return n->len == 0 || streq(n->str, "~") || streq(n->str, "null") || streq(n->str, "Null") ||
           streq(n->str, "NULL");
}

/* What a node is, for "expected X, got Y". */
const char *cfg_describe(char *buf, size_t size, const struct ynode *n)
{
    if (n->kind == Y_SEQ)
        return "a list";
    if (n->kind == Y_MAP)
        return "a mapping";
    if (cfg_is_null(n))
        return "nothing";
    return cfg_quote(buf, size, n->str, n->len);
}

/* Paths longer than the buffer (absurd keys) end in "...". */
static void fix_truncated(char *out, size_t size, int r)
{
    if ((r < 0 || (size_t)r >= size) && size > 4)
        memcpy(out + size - 4, "...", 4);
}

void cfg_subpath(char *out, size_t size, const char *path, const char *key)
{
    fix_truncated(out, size, snprintf(out, size, "%s%s%s", path, path[0] ? "." : "", key));
}

void cfg_idxpath(char *out, size_t size, const char *path, size_t i)
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
const char *cfg_nearest(const char *word, const char *const *cands, size_t ncands)
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

size_t cfg_count_list(const char *const *l)
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
        struct anchor *tab = cfg_alloc(&b->c->tree, cap * sizeof(*tab));
        for (size_t i = 0; i < b->capanchors; i++)
            if (b->anchors[i].name)
                *anchor_slot(tab, cap, b->anchors[i].name) = b->anchors[i];
        b->anchors = tab;
        b->capanchors = cap;
    }
    struct anchor *s = anchor_slot(b->anchors, b->capanchors, name);
    if (!s->name) {
        s->name = cfg_strdup(&b->c->tree, name);
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
            cfg_idxpath(tmp, sizeof(tmp), out, inner ? n->n : n->n - 1);
        } else {
            size_t k = inner ? (n->n % 2 ? n->n - 1 : SIZE_MAX) : n->n - 2;
            if (k == SIZE_MAX || n->v[k]->kind != Y_SCALAR)
                break;
            cfg_subpath(tmp, sizeof(tmp), out, n->v[k]->str);
        }
        fix_truncated(out, size, snprintf(out, size, "%s", tmp));
    }
}

static void node_append(struct ctx *c, struct ynode *parent, struct ynode *child)
{
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 4;
        struct ynode **v = cfg_alloc(&c->tree, cap * sizeof(*v));
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
    struct ynode **keys = cfg_alloc(&c->tree, nkeys * sizeof(*keys));
    size_t k = 0;
    char path[PATHLEN];
    builder_path(b, path, sizeof(path));
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        struct ynode *key = map->v[i];
        char what[QLEN];
        if (key->kind != Y_SCALAR)
            cfg_err(c, key, path, "expected a plain key, got %s",
                    cfg_describe(what, sizeof(what), key));
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
            cfg_subpath(sub, sizeof(sub), path, keys[i]->str);
            cfg_err(c, keys[i], sub, "duplicate key %s (first at line %u)",
                    cfg_quote(q, sizeof(q), keys[i]->str, keys[i]->len), keys[first]->line);
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
    struct ynode *n = cfg_alloc(&b->c->tree, sizeof(*n));
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
            cfg_err_at(c, line, col, path, "%s (byte 0x%02x)",
                       p->problem ? p->problem : "bad input", (unsigned)p->problem_value & 0xff);
        else
            cfg_err_at(c, line, col, path, "%s", p->problem ? p->problem : "bad input");
        return;
    }
    if (p->error == YAML_MEMORY_ERROR)
        cfg_oom();
    line = (uint32_t)p->problem_mark.line + 1;
    col = (uint32_t)p->problem_mark.column + 1;
    if (source_char(c, line, col) == '\t')
        cfg_err_at(c, line, col, path, "YAML syntax error: a tab; YAML indents with spaces only");
    else if (p->context)
        cfg_err_at(c, line, col, path, "YAML syntax error: %s %s (line %zu, column %zu)",
                   p->problem, p->context, p->context_mark.line + 1, p->context_mark.column + 1);
    else
        cfg_err_at(c, line, col, path, "YAML syntax error: %s",
                   p->problem ? p->problem : "malformed input");
}

/*
 * Parses the whole buffer into b->root. Returns 0, or -1 after reporting
 * the error (syntax, depth, size, aliases). Only stops at the first error:
 * after a YAML syntax error nothing that follows has a reliable meaning.
 */
/* A sequence or mapping opens; false after reporting too deep a nesting. */
static bool on_start(struct builder *b, const yaml_event_t *ev)
{
    struct ctx *c = b->c;
    const yaml_mark_t *m = &ev->start_mark;
    if (b->depth == CONFIG_MAX_DEPTH) {
        char path[PATHLEN];
        builder_path(b, path, sizeof(path));
        cfg_err_at(c, (uint32_t)m->line + 1, (uint32_t)m->column + 1, path,
                   "nested deeper than %d levels", CONFIG_MAX_DEPTH);
        return false;
    }
    bool seq = ev->type == YAML_SEQUENCE_START_EVENT;
    struct ynode *node = new_node(b, seq ? Y_SEQ : Y_MAP, m);
    const char *anchor =
        (const char *)(seq ? ev->data.sequence_start.anchor : ev->data.mapping_start.anchor);
    /* the anchor becomes usable when the node is complete (no cycles) */
    node->str = anchor ? cfg_strdup(&c->tree, anchor) : NULL;
    b->count++;
    builder_add(b, node);
    b->start_count[b->depth] = b->count;
    b->stack[b->depth++] = node;
    return true;
}

static void on_end(struct builder *b)
{
    struct ynode *n = b->stack[b->depth - 1];
    n->weight = b->count - b->start_count[b->depth - 1] + 1;
    if (n->kind == Y_MAP)
        check_mapping_keys(b, n);
    b->depth--;
    if (n->str) {
        anchor_set(b, n->str, n);
        n->str = NULL;
    }
}

/* An alias: the anchored node is shared, its weight counted again. */
static bool on_alias(struct builder *b, const yaml_event_t *ev)
{
    const yaml_mark_t *m = &ev->start_mark;
    const char *name = (const char *)ev->data.alias.anchor;
    struct ynode *target = anchor_get(b, name);
    if (!target) {
        char path[512], q[96];
        builder_path(b, path, sizeof(path));
        cfg_err_at(b->c, (uint32_t)m->line + 1, (uint32_t)m->column + 1, path,
                   "alias %s: no anchor of that name is defined before it",
                   cfg_quote(q, sizeof(q), name, strlen(name)));
        return false;
    }
    b->count += target->weight;
    builder_add(b, target);
    return true;
}

static void on_scalar(struct builder *b, const yaml_event_t *ev)
{
    struct ynode *node = new_node(b, Y_SCALAR, &ev->start_mark);
    node->str =
        cfg_strndup(&b->c->tree, (const char *)ev->data.scalar.value, ev->data.scalar.length);
    node->len = ev->data.scalar.length;
    node->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    node->weight = 1;
    b->count++;
    builder_add(b, node);
    if (ev->data.scalar.anchor)
        anchor_set(b, (const char *)ev->data.scalar.anchor, node);
}

/* One parser event into the tree: 0 go on, 1 the stream ended, -1 failed
 * (reported). */
static int on_event(struct builder *b, const yaml_event_t *ev)
{
    struct ctx *c = b->c;
    const yaml_mark_t *m = &ev->start_mark;
    switch (ev->type) {
    case YAML_STREAM_END_EVENT:
        return 1;
    case YAML_DOCUMENT_START_EVENT:
        if (++b->documents > 1) {
            char path[1] = "";
            cfg_err_at(c, (uint32_t)m->line + 1, (uint32_t)m->column + 1, path,
                       "a second YAML document: a config file holds exactly one");
            return -1;
        }
        break;
    case YAML_SCALAR_EVENT:
        on_scalar(b, ev);
        break;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        if (!on_start(b, ev))
            return -1;
        break;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        on_end(b);
        break;
    case YAML_ALIAS_EVENT:
        if (!on_alias(b, ev))
            return -1;
        break;
    default:
        break;
    }
    if (b->count > CONFIG_MAX_NODES) {
        char path[PATHLEN];
        builder_path(b, path, sizeof(path));
        cfg_err_at(c, (uint32_t)m->line + 1, (uint32_t)m->column + 1, path,
                   "more than %d YAML nodes (counting each use of an alias): too large",
                   CONFIG_MAX_NODES);
        return -1;
    }
    return 0;
}

static int build_tree(struct builder *b)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        cfg_oom();
    yaml_parser_set_input_string(&p, (const unsigned char *)b->c->src, b->c->srclen);
    yaml_parser_set_encoding(&p, YAML_UTF8_ENCODING);
    int rc;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            syntax_error(b, &p);
            rc = -1;
            break;
        }
        rc = on_event(b, &ev);
        yaml_event_delete(&ev);
        if (rc != 0)
            break;
    }
    yaml_parser_delete(&p);
    return rc > 0 ? 0 : -1;
}

int cfg_tree_build(struct ctx *c, const struct ynode **root)
{
    struct builder *b = cfg_alloc(&c->tree, sizeof(*b));
    b->c = c;
    int rc = build_tree(b);
    *root = b->root;
    return rc;
}
