/*
 * config_internal: what the config module's files share while loading (not
 * part of the config API, which is config.h).
 *
 *  config_yaml.c   the arena, the YAML tree with anchors, diagnostics and
 *                  the string helpers of messages (paths, quoting, did-you-mean)
 *  config_value.c  value parsers: durations, sizes, addresses, CIDRs
 *  config.c        the schema: a table of fields per mapping, their loaders
 *  config_check.c  defaults-to-routes and the cross checks (names, shadowing)
 *  config_schema.c the typed getters and the walker (cfg_walk)
 *
 * config_trusted.c is not part of loading: it answers, per request, whether
 * a peer is a trusted proxy (it does not include this header).
 *
 * Everything here runs in the process that loads a config, never on a
 * coroutine stack.
 */
#ifndef FERRY_CONFIG_INTERNAL_H
#define FERRY_CONFIG_INTERNAL_H

/* The including file includes config.h first (this header adds to it). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- arena: everything of one config (or one parse tree) freed at once ---- */

struct arena_block;
struct arena {
    struct arena_block *head;
};

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
    const struct ynode *split_node;           /* routes[].split (config_route.c) */
    const struct cfg_split_item *split_items; /* its items, before names are resolved */
    size_t nsplit_items;
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
    struct route_aux *raux;
    struct upstream_aux *uaux;
    const struct ynode *root;
};

/*
 * Where a value sits: a chain of keys and list indexes on the walker's
 * stack, written out ("upstreams.api.servers[0].address") only when a
 * message is reported. NULL is the top level. CFG_KEY and CFG_INDEX make a
 * link that lives until the end of the enclosing block.
 */
struct cfg_path {
    const struct cfg_path *up;
    const char *key; /* a mapping's key, or NULL: item `index` of a list */
    size_t index;
};
#define CFG_KEY(parent, k) (&(const struct cfg_path){.up = (parent), .key = (k)})
#define CFG_INDEX(parent, i) (&(const struct cfg_path){.up = (parent), .index = (i)})

/* ---- small string helpers ---- */

/* Buffers for written-out paths and quoted values. A longer path ends in
 * "...". */
enum { PATHLEN = 512, QLEN = 72 };

static inline bool streq(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

/* config_yaml.c */
void cfg_oom(void) __attribute__((noreturn));
void *cfg_alloc(struct arena *a, size_t size);
char *cfg_strndup(struct arena *a, const char *s, size_t len);
char *cfg_strdup(struct arena *a, const char *s);
void cfg_arena_fini(struct arena *a);
__attribute__((format(printf, 4, 5))) void
cfg_err(struct ctx *c, const struct ynode *at, const struct cfg_path *path, const char *fmt, ...);
__attribute__((format(printf, 4, 5))) void
cfg_warn(struct ctx *c, const struct ynode *at, const struct cfg_path *path, const char *fmt, ...);
/* At a position with a path already written out (the tree builder's). */
__attribute__((format(printf, 5, 6))) void cfg_err_at(struct ctx *c, uint32_t line, uint32_t col,
                                                      const char *path, const char *fmt, ...);
void cfg_print_diags(struct ctx *c, FILE *f);
const char *cfg_quote(char *buf, size_t size, const char *s, size_t len);
bool cfg_is_null(const struct ynode *n);
const char *cfg_describe(char *buf, size_t size, const struct ynode *n);
const char *cfg_nearest(const char *word, const char *const *cands, size_t ncands);
size_t cfg_count_list(const char *const *l);
/* Parses c->src into a tree; 0, or -1 after reporting. *root NULL: empty. */
int cfg_tree_build(struct ctx *c, const struct ynode **root);

/* config_schema.c: typed getters (each reports its own error, returns false) */
bool cfg_want_scalar(struct ctx *c, const struct ynode *n, const struct cfg_path *path,
                     const char *what);
bool cfg_want_map(struct ctx *c, const struct ynode *n, const struct cfg_path *path,
                  const char *what);
bool cfg_want_seq(struct ctx *c, const struct ynode *n, const struct cfg_path *path,
                  const char *what);
size_t cfg_map_pairs(const struct ynode *n);
size_t cfg_seq_items(const struct ynode *n);
bool cfg_get_string(struct ctx *c, const struct ynode *n, const struct cfg_path *path, char **out);
bool cfg_get_uint(struct ctx *c, const struct ynode *n, const struct cfg_path *path, uint64_t min,
                  uint64_t max, const char *what, uint64_t *out);
bool cfg_get_u32(struct ctx *c, const struct ynode *n, const struct cfg_path *path, uint64_t min,
                 uint64_t max, const char *what, uint32_t *out);
bool cfg_get_bool(struct ctx *c, const struct ynode *n, const struct cfg_path *path, bool *out);
bool cfg_get_duration(struct ctx *c, const struct ynode *n, const struct cfg_path *path,
                      bool zero_ok, int64_t *out);
bool cfg_get_size(struct ctx *c, const struct ynode *n, const struct cfg_path *path, uint64_t min,
                  uint64_t max, uint64_t *out);
bool cfg_valid_name(const struct ynode *n);
bool cfg_get_addr(struct ctx *c, const struct ynode *n, const struct cfg_path *path, bool names_ok,
                  struct config_addr *a);

/*
 * The schema: each mapping of the file is a table of fields, walked by
 * cfg_walk. A field's kind says how its value is read: the plain kinds
 * store at `offset` in the walk's target; CFG_CUSTOM calls `load` with the
 * target; CFG_LATER is a key of the contract this version refuses ("not
 * supported yet"). Later keys come last in a table (they are suggested
 * after the known ones).
 */
enum cfg_kind { CFG_U32, CFG_SIZE, CFG_DURATION, CFG_BOOL, CFG_CUSTOM, CFG_LATER };

struct cfg_field {
    const char *key;
    enum cfg_kind kind;
    size_t offset;     /* U32, SIZE, DURATION, BOOL: of the value in the target */
    uint64_t min, max; /* U32, SIZE: bounds; DURATION: min 0 allows 0 */
    const char *what;  /* U32: the expectation named in errors */
    uint64_t def;      /* U32, SIZE, DURATION (ms), BOOL: the value when the key is absent */
    /* CFG_CUSTOM: reads value v of key k (path: where it is) into target */
    bool (*load)(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                 const struct ynode *v, const struct cfg_path *path, void *target);
    const char *required; /* NULL, or the error when the key is missing */
    const char *doc;      /* one line: what the key sets (and its default) */
};

struct cfg_schema {
    const char *path; /* where the mapping sits: "upstreams.NAME.retries" ("" = top) */
    const char *what; /* the expectation when the value is not a mapping;
                       * NULL: the caller checked it is one */
    const struct cfg_field *fields; /* ends with key NULL; at most 64 */
};

/* Walks mapping n with schema s into target. Returns false when anything
 * in it was reported (missing required keys included). */
bool cfg_walk(struct ctx *c, const struct ynode *n, const struct cfg_path *path,
              const struct cfg_schema *s, void *target);
/* Stores the default (def) of every U32, SIZE, DURATION and BOOL field of
 * s into target; a custom field's default is its loader's business. */
void cfg_defaults(const struct cfg_schema *s, void *target);
/* The value of key in mapping n, or NULL. */
const struct ynode *cfg_map_get(const struct ynode *n, const char *key);
/* Every schema, ending with NULL (config.c). */
extern const struct cfg_schema *const cfg_schemas[];

/* config_value.c */
bool cfg_parse_u64(const char *s, uint64_t *out);
bool cfg_valid_hostname(const char *h);
const char *cfg_parse_addr(struct ctx *c, const char *s, bool names_ok, struct config_addr *a);
const char *cfg_parse_cidr(const char *s, struct config_cidr *out, bool *host_bits);
void cfg_format_cidr(const struct config_cidr *cidr, char *buf, size_t size);

/* config_balance.c: CFG_CUSTOM loaders of upstreams.NAME.balance,
 * .hash_key, .retries.budget and .health_check (target: struct
 * config_upstream) */
bool cfg_load_balance(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                      const struct ynode *v, const struct cfg_path *path, void *target);
bool cfg_load_hash_key(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                       const struct ynode *v, const struct cfg_path *path, void *target);
bool cfg_load_retry_budget(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                           const struct ynode *v, const struct cfg_path *path, void *target);
bool cfg_load_health(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                     const struct ynode *v, const struct cfg_path *path, void *target);
/* resolver: the nameservers for servers' DNS names (top level). */
bool cfg_load_resolver(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                       const struct ynode *n, const struct cfg_path *path, void *target);
/* upstreams.NAME.resolve: the families asked for its servers' names. */
bool cfg_load_resolve(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                      const struct ynode *v, const struct cfg_path *path, void *target);
extern const struct cfg_schema cfg_health_schema;

/* config.c */
extern const char *const CFG_TIMEOUT_KEYS[];
int64_t *cfg_timeout_field(struct config_timeouts *t, size_t i);
void cfg_set_defaults(struct config *cfg);

/* config_tls.c: listen[].tls and upstreams.NAME.tls */
bool cfg_load_listen_tls(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                         const struct ynode *v, const struct cfg_path *path, void *target);
bool cfg_load_upstream_tls(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                           const struct ynode *v, const struct cfg_path *path, void *target);
bool cfg_load_client_cert(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                          const struct ynode *v, const struct cfg_path *path, void *target);
extern const struct cfg_schema cfg_listen_tls_schema, cfg_tls_cert_schema, cfg_upstream_tls_schema,
    cfg_client_cert_schema;
/* config_auth.c: routes[].auth, its schemas, and the
 * policies' release (with the config, also after a failed load) */
/* routes[].rate_limit and routes[].cors (config_policy.c). */
extern const struct cfg_schema cfg_rate_limit_schema, cfg_cors_schema;
bool cfg_load_rate_limit(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                         const struct ynode *v, const struct cfg_path *path, void *target);
bool cfg_load_cors(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                   const struct ynode *v, const struct cfg_path *path, void *target);
bool cfg_load_route_auth(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                         const struct ynode *v, const struct cfg_path *path, void *target);
extern const struct cfg_schema *const cfg_auth_schemas[]; /* ends with NULL */
void cfg_free_policies(struct config *cfg);

/* config_check.c */
void cfg_cross_check(struct ctx *c);

/* config_route.c: path_regex, headers, query, rewrite, split (rows in config.c) */
struct cfg_split_item;
bool cfg_load_path_regex(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                         const struct ynode *v, const struct cfg_path *path, void *target);
bool cfg_load_match_fields(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                           const struct ynode *v, const struct cfg_path *path, void *target);
bool cfg_load_rewrite(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                      const struct ynode *v, const struct cfg_path *path, void *target);
bool cfg_load_split(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                    const struct ynode *v, const struct cfg_path *path, void *target);
bool cfg_load_split_key(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                        const struct ynode *v, const struct cfg_path *path, void *target);
extern const struct cfg_schema cfg_cond_schema, cfg_split_schema;
void cfg_route_check(struct ctx *c, const struct ynode *n, const struct cfg_path *path,
                     struct config_route *r);
void cfg_route_resolve(struct ctx *c);
void cfg_regexes_free(struct config *cfg);

#endif
