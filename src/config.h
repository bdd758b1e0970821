/*
 * config: the YAML file (docs/config.md, ferry.yaml(5)) loaded into an
 * immutable, reference-counted snapshot.
 *
 * Contract:
 * - Pure module: reads one file (or a buffer) and returns a struct config.
 *   No libevent, no coroutines, no I/O but reading the file; only
 *   config_yaml.c includes <yaml.h>. Each mapping of the file is a table of
 *   fields walked by one function (config_internal.h has the module's map). Nothing here yields;
 * call it from the main thread.
 * - A loaded config is never modified. Workers and requests hold references
 *   (config_ref/config_unref, an atomic count); the last unref frees it.
 * - Every error and warning is printed to `diag` as
 *       FILE:LINE:COLUMN: PATH: message
 *       <the offending line>
 *       <spaces>^
 *   (warnings say "warning: " before the message; PATH is left out when
 *   the problem is not inside any key, e.g. an empty file). All errors of a
 *   file are reported, up to CONFIG_MAX_ERRORS, then one summary line
 *   "FILE: N errors, N warnings".
 * - Durations are int64_t milliseconds, sizes uint64_t bytes, counts
 *   uint32_t. Every default is documented in conf/ferry.yaml.
 * - Out of memory while loading aborts the process (the loader runs at
 *   start and on SIGHUP, in the main thread, on a file capped at
 *   CONFIG_MAX_FILE_BYTES; there is no request to fail instead).
 */
#ifndef FERRY_CONFIG_H
#define FERRY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "http1.h"
#include "log.h"

#define CONFIG_MAX_ERRORS 20
#define CONFIG_MAX_FILE_BYTES (8u << 20) /* larger files are rejected */
#define CONFIG_MAX_NODES 1000000         /* YAML nodes after alias expansion */
#define CONFIG_MAX_DEPTH 64              /* YAML nesting */
#define CONFIG_MAX_ROUTES 10000
/* The largest limits.max_header_bytes: a request head must fit in a client
 * connection's read buffer (CLIENT_READ_MAX, 128 KiB, conn.c) and a
 * response head in an upstream's (UPSTREAM_READ_MAX, 256 KiB, upstream.c).
 * A larger limit could never be reached: a head between the two would wait
 * for bytes that are never read and end in 408/504 instead of 431/502. */
#define CONFIG_MAX_HEADER_BYTES_LIMIT (128u << 10)

/* An address from listen[].address, admin.listen or servers[].address. */
struct config_addr {
    char *text;    /* as written: "0.0.0.0:8080", "[::1]:80", "unix:/run/x.sock" */
    bool is_unix;  /* unix:/path */
    char *path;    /* the unix socket path, else NULL */
    char *host;    /* host without brackets ("::1", "api.internal"), else NULL */
    uint16_t port; /* 0 for unix */
    bool numeric;  /* host is an IP literal (or unix): sa/salen are ready */
    struct sockaddr_storage sa;
    socklen_t salen;
};

/* A CIDR from trusted_proxies. An address without /N is a full-length prefix. */
struct config_cidr {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network order, host bits zeroed; AF_INET uses addr[0..3] */
    uint8_t prefix;   /* 0..32 or 0..128 */
};

/* timeouts: every phase, milliseconds. Only `total` may be 0 (= none). */
struct config_timeouts {
    int64_t client_header;    /* 10s: whole request head, from its first byte */
    int64_t client_body;      /* 30s: longest gap between two body reads */
    int64_t client_send;      /* 60s: longest a client may stall reading */
    int64_t client_idle;      /* 60s: keep-alive idle between requests */
    int64_t upstream_connect; /* 2s */
    int64_t upstream_header;  /* 30s: request sent -> response head */
    int64_t upstream_read;    /* 60s: gap between two response body reads */
    int64_t upstream_send;    /* 60s: upstream stalls reading our request */
    int64_t upstream_idle;    /* 4s: pooled idle upstream connection */
    int64_t total;            /* 0 = none: whole request including retries */
    int64_t tunnel_idle;      /* 1h: no byte either way in a WebSocket tunnel */
};

struct config_limits {
    uint32_t max_connections;  /* 100000 per worker */
    uint64_t max_header_bytes; /* 32k */
    uint32_t max_headers;      /* 100 */
    uint64_t max_body_bytes;   /* 10m, 0 = unlimited */
};

/*
 * A file the config names (certificates, keys, CAs), with where it is named:
 * its contents are read by the tls module after loading, and a problem
 * found then is reported as FILE:LINE:COLUMN: KEY: message like any other.
 */
struct config_file {
    char *path;         /* NULL = not given */
    char *key;          /* where, written out: "listen[1].tls.certificates[0].cert" */
    uint32_t line, col; /* of the value */
};

/* TLS protocol versions (listen[].tls.protocols, upstreams.NAME.tls.protocols). */
enum {
    CONFIG_TLS_V12 = 1u << 0,
    CONFIG_TLS_V13 = 1u << 1,
};

/* listen[].tls.certificates[]: a certificate (its chain may follow it in
 * the same file), its key, and an optional OCSP response to staple. */
struct config_tls_cert {
    struct config_file cert, key, ocsp_staple;
};

enum config_client_verify {
    CONFIG_CLIENT_VERIFY_OFF,      /* no client_ca: certificates are not asked for */
    CONFIG_CLIENT_VERIFY_OPTIONAL, /* asked for; one that is sent must verify */
    CONFIG_CLIENT_VERIFY_REQUIRED, /* asked for and required */
};

/* listen[].tls */
struct config_tls {
    struct config_tls_cert *certs; /* the first is the default */
    size_t ncerts;                 /* >= 1 */
    unsigned protocols;            /* CONFIG_TLS_V12 | CONFIG_TLS_V13 */
    char *ciphers;                 /* TLS 1.2 cipher list; NULL: Mozilla intermediate */
    struct config_file client_ca;  /* path NULL: no client certificates */
    enum config_client_verify client_verify;
    uint32_t line, col; /* of the tls: key */
    void *ctx;          /* the contexts tls_config_load built (tls.c's own) */
};

/* upstreams.NAME.tls */
struct config_upstream_tls {
    bool verify;                  /* true */
    struct config_file ca;        /* path NULL: the system's CA store */
    char *sni;                    /* NULL: the Host sent when fixed, else the server's name */
    struct config_file cert, key; /* a client certificate; path NULL: none */
    unsigned protocols;
    void *ctx; /* the context tls_config_load built (tls.c's own) */
};

struct config_listener {
    struct config_addr addr; /* always numeric or unix */
    struct config_tls *tls;  /* NULL: cleartext */
    uint32_t backlog;        /* 4096 */
    bool proxy_protocol;     /* false */
    bool defer_accept;       /* true: TCP_DEFER_ACCEPT (TCP listeners) */
};

enum config_host_header {
    CONFIG_HOST_PRESERVE, /* the client's Host (default) */
    CONFIG_HOST_UPSTREAM, /* the server's host[:port] as written in its address */
    CONFIG_HOST_LITERAL,  /* host_literal */
};

/* upstreams.NAME.resolve: the address families asked for a server's DNS
 * name (resolve.h). */
enum config_resolve {
    CONFIG_RESOLVE_ANY,  /* A and AAAA (default) */
    CONFIG_RESOLVE_IPV4, /* A only */
    CONFIG_RESOLVE_IPV6, /* AAAA only */
};

/* The order of balancer.h's enum balancer_kind. */
enum config_balance {
    CONFIG_BALANCE_ROUND_ROBIN,
    CONFIG_BALANCE_LEAST_CONN,
    CONFIG_BALANCE_RANDOM_TWO,
    CONFIG_BALANCE_HASH,
};

/* Where balance: hash finds a request's key (hash_key). */
enum config_hash_source {
    CONFIG_HASH_NONE,
    CONFIG_HASH_CLIENT_IP,
    CONFIG_HASH_HEADER, /* hash_name: the header's name */
    CONFIG_HASH_COOKIE, /* hash_name: the cookie's name */
};

struct config_server {
    struct config_addr addr; /* host may be a DNS name (numeric == false) */
    uint32_t weight;         /* 1 */
    uint32_t index;          /* position in its upstream's servers[] */
    /* One address of a DNS name (resolve.c): addr.text is the server's
     * identity "NAME:PORT@IP", this the address as written (the Host
     * sent by host_header: upstream). NULL for a server as written. */
    char *written;
    uint32_t line, col; /* where its address is written (warnings at start) */
};

/* What a retry on another server may follow (retries.on). */
enum {
    CONFIG_RETRY_CONNECT_ERROR = 1u << 0, /* nothing was sent: any method */
    CONFIG_RETRY_RESET = 1u << 1,         /* closed or reset before answering */
    CONFIG_RETRY_TIMEOUT = 1u << 2,       /* no head within upstream_header */
    CONFIG_RETRY_502 = 1u << 3,
    CONFIG_RETRY_503 = 1u << 4,
    CONFIG_RETRY_504 = 1u << 5,
};

/* health_check: active checks, one checker per server for the process. */
struct config_health {
    char *path; /* NULL: no active checks */
    char *host; /* the Host sent; NULL: the server's address */
    int64_t interval_ms;
    int64_t timeout_ms;
    uint32_t healthy_after;
    uint32_t unhealthy_after;
    uint16_t *expect_status; /* [200] by default */
    size_t nexpect_status;
    bool start_healthy; /* a server new to the process starts healthy */
    bool fail_open;     /* all servers down: use them all rather than 503 */
};

struct config_upstream {
    char *name;
    uint32_t index; /* position in cfg->upstreams */
    struct config_server *servers;
    size_t nservers; /* >= 1 */
    enum config_balance balance;
    /* balance: hash's key: where, and the header or cookie name (else NULL) */
    enum config_hash_source hash_source;
    char *hash_name;
    uint32_t keepalive;       /* 64 idle pooled connections per server per worker */
    uint32_t max_connections; /* per server per worker, 0 = unlimited */
    enum config_host_header host_header;
    char *host_literal; /* CONFIG_HOST_LITERAL only, else NULL */
    /* retries: extra tries on other servers, and after what. Without the
     * section: 1 try after a connect error. Anything after the request
     * was sent is retried only for an idempotent method without a body. */
    uint32_t retry_attempts;
    unsigned retry_on; /* CONFIG_RETRY_* */
    /* retries.replay_bytes: a request body is kept up to this size until
     * the response head arrives, so a retry (here or after a stale pooled
     * connection) can resend it whole; a larger one is not retried once
     * sent. Default 64 KiB; 0 = bodies are never replayed. */
    uint64_t replay_bytes;
    /* retries.budget: retries may add at most this percentage of the
     * upstream's requests over the last 10 s (process-wide), plus
     * retries.budget_min per second whatever the traffic. */
    uint32_t retry_budget_pct; /* 20 */
    uint32_t retry_budget_min; /* 3 */
    /* retries.backoff: the base of the jittered exponential wait before a
     * retry (0 = none). */
    int64_t retry_backoff_ms;
    /* passive: a server that gave no usable response (connect error,
     * reset, timeout, invalid head) passive_failures times in a row,
     * counted over all workers, is left out for passive_eject_ms (doubled
     * each time it is ejected again soon after returning, up to
     * passive_max_eject_ms); never more than half of the servers at once.
     * 0 failures = off (the default). */
    uint32_t passive_failures;
    int64_t passive_eject_ms;
    int64_t passive_max_eject_ms; /* repeated ejections double up to this (300s) */
    struct config_health health;
    struct config_upstream_tls *tls; /* NULL: cleartext */
    /* A server's DNS name has no address yet (resolve_expand): that server
     * is never picked, and with no other server the answer is 503. */
    bool unresolved;
    /* resolve: the address families asked for its servers' DNS names */
    enum config_resolve resolve;
};

/* Method bits for the common methods; others are only in match.methods[]. */
enum {
    CONFIG_METHOD_GET = 1u << 0,
    CONFIG_METHOD_HEAD = 1u << 1,
    CONFIG_METHOD_POST = 1u << 2,
    CONFIG_METHOD_PUT = 1u << 3,
    CONFIG_METHOD_DELETE = 1u << 4,
    CONFIG_METHOD_CONNECT = 1u << 5,
    CONFIG_METHOD_OPTIONS = 1u << 6,
    CONFIG_METHOD_TRACE = 1u << 7,
    CONFIG_METHOD_PATCH = 1u << 8,
    CONFIG_METHOD_OTHER = 1u << 31, /* some method outside this list is named */
};

/*
 * match: every condition present must hold; an absent one matches all.
 * Host: lower-cased, no port, no trailing dot. "*.example.com" is stored
 * with host_wildcard set and host = ".example.com" (matches any name
 * ending with it, not "example.com" itself).
 * path_prefix respects segment boundaries: "/v1" matches "/v1" and
 * "/v1/x", never "/v1evil"; "/v1/" matches "/v1/x" only.
 */
/*
 * One condition of match.headers or match.query on a field (or query
 * parameter) name. Header names are compared case-insensitively, query
 * names and every value byte for byte (query values as sent, not
 * percent-decoded). Several fields of one name: the condition holds when
 * any of them satisfies it (absent: when there is none).
 */
enum config_field_match {
    CONFIG_FIELD_EXACT,   /* value == text */
    CONFIG_FIELD_PREFIX,  /* value starts with text */
    CONFIG_FIELD_REGEX,   /* regex matches somewhere in the value (anchor it with ^...$) */
    CONFIG_FIELD_PRESENT, /* the field is there, any value */
    CONFIG_FIELD_ABSENT,  /* no field of that name */
};

struct regex;

struct config_field_cond {
    char *name;
    size_t name_len;
    enum config_field_match kind;
    char *text; /* EXACT, PREFIX: the value; else NULL */
    size_t text_len;
    struct regex *regex; /* REGEX: compiled at load */
};

struct config_match {
    char *host; /* NULL = any */
    bool host_wildcard;
    char *path;        /* exact, NULL = any */
    char *path_prefix; /* NULL = any; path and path_prefix are exclusive */
    char **methods;    /* upper-case tokens as written; NULL/0 = any */
    size_t nmethods;
    uint32_t method_mask; /* CONFIG_METHOD_* of methods[]; 0 = any */
    /* path_regex: a PCRE2 pattern searched in the normalised path (anchor
     * it with ^...$), compiled once at load; exclusive with path and
     * path_prefix. Its captures feed the route's rewrite. */
    char *path_regex; /* as written, NULL = none */
    struct regex *path_re;
    struct config_field_cond *headers; /* match.headers: all must hold */
    size_t nheaders;
    struct config_field_cond *query; /* match.query: all must hold */
    size_t nquery;
};

/* The source of a split's sticky key (routes[].split_key). */
enum config_split_key {
    CONFIG_SPLIT_RANDOM,    /* no split_key: each request drawn at random */
    CONFIG_SPLIT_CLIENT_IP, /* the client's address */
    CONFIG_SPLIT_HEADER,    /* header:NAME */
    CONFIG_SPLIT_COOKIE,    /* cookie:NAME */
};

/* One upstream of a route's split: its share is weight / split_total. */
struct config_split {
    const struct config_upstream *upstream;
    uint32_t weight; /* >= 1 */
};

struct config_respond {
    uint16_t status; /* 100..599 */
    char *body;      /* "" when absent */
    size_t body_len;
    char *content_type; /* NULL when absent */
};

/*
 * rate_limit of a route: a token bucket per key, refilled at `requests`
 * per `per`, holding requests + burst tokens (see ratelimit.h). The
 * buckets live in a table shared by the workers, found by the route's
 * name at first use (state_, set once with an atomic store).
 */
enum config_rate_key {
    CONFIG_RATE_CLIENT_IP, /* the client's address (after PROXY/trusted) */
    CONFIG_RATE_HEADER,    /* header:NAME: the field's first value */
    CONFIG_RATE_IDENTITY,  /* who the route's auth found */
    CONFIG_RATE_CONST,     /* const:TEXT: one bucket for the route */
};

struct config_rate_limit {
    uint32_t requests; /* >= 1 */
    int64_t per;       /* ms, > 0 (1s) */
    uint32_t burst;    /* 0 */
    enum config_rate_key key;
    char *key_arg; /* header name or constant text; NULL for the others */
    size_t key_arg_len;
    void *state_; /* struct ratelimit *, set at first use (atomic) */
    /* store: redis://HOST[:PORT][/DB] (ratelimit_redis.h); NULL: local */
    char *store_url;
    char *store_host; /* a name, or an IP literal (no brackets) */
    uint16_t store_port;
    uint32_t store_db;
    bool store_deny;       /* on_store_error: deny (false: allow) */
    int64_t store_timeout; /* ms, > 0 (100) */
};

/* Parses redis://HOST[:PORT][/DB] (port 6379, db 0 by default): the host
 * (a name, IPv4, or [IPv6]) into host (room for 256), the port and db.
 * Returns NULL, or what is wrong. Pure. */
const char *config_redis_url(const char *s, size_t len, char *host, uint16_t *port, uint32_t *db);

/*
 * cors of a route (see cors.h): origins as written ("*" alone, exact
 * origins, or patterns whose host starts with "*." to match any subdomain);
 * the lists below joined with ", " for the response fields.
 */
struct config_cors {
    char **origins;
    size_t norigins;
    bool any_origin;  /* "*" */
    char *methods;    /* Access-Control-Allow-Methods (GET, HEAD, POST) */
    char *headers;    /* Access-Control-Allow-Headers, NULL: echo the request's */
    char *expose;     /* Access-Control-Expose-Headers, NULL: none */
    bool credentials; /* Access-Control-Allow-Credentials: true */
    int64_t max_age;  /* ms, 0: no Access-Control-Max-Age */
};

/*
 * request_headers / response_headers of a route: `set` replaces every field
 * of its name (or adds it), `add` appends one more, `remove` drops every
 * field of its name (value NULL). Applied after Ferry's own forwarding
 * headers, in that order: remove and set first, then the appended fields.
 * Names are tokens and values valid field values (checked when loading);
 * framing and connection fields (Connection, Content-Length, Transfer-
 * Encoding, Upgrade, TE, Trailer, Keep-Alive, Proxy-Connection, and Host
 * on requests: the upstream's host_header) are not rewritable.
 */
struct config_header_rules {
    struct http1_header *set;
    size_t nset;
    struct http1_header *add;
    size_t nadd;
    struct http1_header *remove;
    size_t nremove;
};

/* routes[].client_cert: what a route asks of the client's TLS certificate
 * (listen[].tls.client_ca verified it during the handshake). */
struct config_client_cert {
    bool required;            /* true: a request without one is answered 403 */
    char *subject_header;     /* NULL, or the field the verified subject goes up in */
    char *fingerprint_header; /* NULL, or the field its SHA-256 fingerprint goes up in */
};
struct auth_policy;

struct config_route {
    char *name;        /* as written, or derived "route-N" (1-based) */
    bool name_derived; /* true when `name` was absent (a warning was given) */
    uint32_t index;    /* position in cfg->routes */
    struct config_match match;
    const struct config_upstream *upstream;      /* NULL for respond routes */
    char *strip_prefix;                          /* NULL = none */
    char *add_prefix;                            /* NULL = none */
    struct config_respond *respond;              /* NULL for proxied routes */
    uint64_t max_body_bytes;                     /* the route's or limits.max_body_bytes */
    struct config_timeouts timeouts;             /* global timeouts overlaid with the route's */
    struct config_header_rules request_headers;  /* to the upstream */
    struct config_header_rules response_headers; /* to the client (also respond answers) */
    bool underscores_in_headers; /* false: client fields named with '_' are dropped */
    bool reject_path_params;     /* true: a path with ';' (or %3B) is answered 400 */
    /* NULL: nothing is asked of the client's certificate */
    struct config_client_cert *client_cert;
    /* rewrite: the upstream path built from match.path_regex's captures
     * ($0..$9, $$ for '$'); NULL = none. Exclusive with strip_prefix and
     * add_prefix. rewrite_refs counts the $N in it (for the output size). */
    char *rewrite;
    uint32_t rewrite_refs;
    /* split: weighted upstreams instead of `upstream` (which then points
     * at split[0].upstream, so code that needs "the route's upstream" for
     * anything but the choice still has one). nsplit 0 = no split. */
    struct config_split *split;
    size_t nsplit;
    uint32_t split_total; /* sum of the weights */
    enum config_split_key split_key;
    char *split_key_name; /* HEADER, COOKIE: the name */
    size_t split_key_len;
    struct auth_policy *auth;             /* auth: (auth.h), NULL: none; freed with the config */
    struct config_rate_limit *rate_limit; /* NULL: none */
    struct config_cors *cors;             /* NULL: none */
};

/* The access log's formats and the error log's levels are log's own types
 * (log.h); these names stay for the loader and older callers. */
#define CONFIG_LOG_JSON LOG_FORMAT_JSON
#define CONFIG_LOG_COMBINED LOG_FORMAT_COMBINED
#define CONFIG_LOG_DEBUG LOG_LEVEL_DEBUG
#define CONFIG_LOG_INFO LOG_LEVEL_INFO
#define CONFIG_LOG_WARN LOG_LEVEL_WARN
#define CONFIG_LOG_ERROR LOG_LEVEL_ERROR

/*
 * access_log: off when the section is absent (path NULL). With the section,
 * path defaults to "stderr" (the journal under systemd), format to json.
 */
struct config_access_log {
    char *path; /* NULL = off, "stderr", or a file path */
    enum log_format format;
};

struct config {
    long refs_; /* atomic; use config_ref/config_unref */
    char *path; /* the file name as given to config_load */

    uint32_t workers;         /* 0 = auto (one per core) */
    uint64_t coroutine_stack; /* 64k (bytes) */
    uint32_t max_requests;    /* 20000 in-flight request coroutines per worker */
    int64_t shutdown_timeout; /* 30s (ms) */
    char *pid_file;           /* NULL = none */
    char *user;               /* NULL = none: switch to it after binding (as root) */
    struct config_cidr *trusted_proxies;
    size_t ntrusted_proxies; /* default: none trusted */

    struct config_listener *listeners;
    size_t nlisteners; /* >= 1 */

    struct config_timeouts timeouts;
    struct config_limits limits;

    struct config_upstream *upstreams;
    size_t nupstreams;
    struct config_route *routes; /* in file order: first match wins */
    size_t nroutes;

    struct config_access_log access_log;
    enum log_level error_log_level;   /* info */
    struct config_addr *admin_listen; /* NULL = no admin listener */

    /* resolver: nameservers for DNS names of servers (NULL: those of
     * /etc/resolv.conf); each numeric, port 53 when not written. */
    struct config_addr *resolvers;
    size_t nresolvers;
    /* The text the config was read from, kept when a server's address is
     * a DNS name: a changed answer rebuilds the config from it (resolve.h). */
    char *source_;
    size_t source_len_;
    void *resolved_; /* what resolve_expand allocated (freed with the config) */
    /* The registry entries of its servers, held while it lives: the last
     * unref calls servers_release_ (resolve_expand sets it). */
    void (*servers_release_)(struct config *cfg);
    void *servers_held_;

    unsigned nwarnings; /* warnings printed while loading */
    /* Frees what tls_config_load attached (the last unref calls it). */
    void (*tls_free)(struct config *cfg);
    void *regexes_; /* every compiled pattern, freed with the config */
};

/*
 * Loads and validates `path`. On success stores a config with one reference
 * in *out and returns 0 (warnings may have been printed). On any error
 * prints every error (up to CONFIG_MAX_ERRORS) to diag, stores NULL and
 * returns -1. diag may be NULL (silent).
 */
int config_load(const char *path, struct config **out, FILE *diag);

/* The same on a buffer (tests, fuzzing); `name` is used in messages. */
int config_load_string(const char *name, const char *data, size_t len, struct config **out,
                       FILE *diag);

/* Adds a reference (atomic). Returns cfg. */
struct config *config_ref(struct config *cfg);
/* Drops a reference (atomic); the last one frees. NULL does nothing. */
void config_unref(struct config *cfg);

/* True when the peer address (AF_INET, AF_INET6 incl. v4-mapped) is inside
 * trusted_proxies. AF_UNIX peers are trusted (they are local). */
bool config_trusted(const struct config *cfg, const struct sockaddr *sa);

/* The upstream or route by name, NULL when absent. */
const struct config_upstream *config_upstream_find(const struct config *cfg, const char *name);
const struct config_route *config_route_find(const struct config *cfg, const char *name);

/* True when the route accepts this method token (any when none listed). */
bool config_route_allows_method(const struct config_route *route, const char *method, size_t len);

/*
 * The keys the loader knows, for documentation checks: calls fn once per
 * key of every mapping, with where the mapping sits ("" for the top level,
 * "upstreams.NAME.retries", "routes[].match"), the key, whether it is
 * reserved for a later version ("not supported yet"), one line of doc and
 * the default as a file would write it ("10s", "64k", "4096", "true"), or
 * NULL when the key's loader sets its own.
 */
typedef void config_key_fn(void *arg, const char *mapping, const char *key, bool later,
                           const char *doc, const char *def);
void config_schema_keys(config_key_fn *fn, void *arg);

/* Value parsers (also used by tests): return 0, or -1 with *why set to a
 * static explanation. Durations: 250ms, 5s, 2m, 1h, 0. Sizes: 512, 16k,
 * 1m, 1g (powers of 1024). */
int config_parse_duration(const char *s, int64_t *ms, const char **why);
int config_parse_size(const char *s, uint64_t *bytes, const char **why);

#endif
