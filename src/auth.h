/*
 * auth: a route's authentication policy (API keys or JWT bearer tokens),
 * built with the config and checked once per request.
 *
 * Owns: the policy of one route (its keys file loaded into SHA-256
 * digests, its JWT key set, its cache of verified tokens) and the result
 * of one check: the identity, the fields to set or remove upstream, the
 * challenge of a 401.
 *
 * Contract:
 * - auth_policy_new reads the files the route names (keys_file,
 *   jwks_file, public_key_file, secret_file) at load and reports every bad
 *   line as FILE:LINE: message through the caller's error function; a
 *   policy with any error is not built. The files are read again only
 *   with the config (reload).
 * - auth_check runs on a worker thread in the request coroutine and never
 *   yields; it returns 0 (let through), 401 (no or bad credentials:
 *   out->challenge holds the WWW-Authenticate value), 403 (authenticated
 *   but not in the route's allow list), 503 (out of memory) or, for basic
 *   auth credentials not in the cache, AUTH_PENDING. It never
 *   says which part of a credential was wrong beyond RFC 6750's error
 *   codes; out->why names it for the access log only.
 * - API keys: compared as SHA-256 digests (the file may hold the digest
 *   alone, "sha256:HEX"), the final comparison in constant time
 *   (CRYPTO_memcmp); finding the candidate orders digests, which tells an
 *   attacker nothing about any key.
 * - JWT: jwt.c verifies; a verified token's results (identity, claims)
 *   are cached by the SHA-256 of the token until its exp (plus leeway), in
 *   a bounded table (cache_size entries, a mutex: workers share it), so a
 *   hot token is verified once per config.
 * - Policy layer; pure (no libevent, no coroutines). Policies are
 *   immutable but for their token cache and are shared by every worker.
 */
#ifndef FERRY_AUTH_H
#define FERRY_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http1.h"

#define AUTH_MAX_CLAIMS 8  /* claims_to_headers entries */
#define AUTH_MAX_VALUE 256 /* bytes of an identity or a claim copied upstream */
#define AUTH_MAX_NAME 64   /* bytes of a name in the keys file */
#define AUTH_MAX_FILE (64u << 20)
#define AUTH_MAX_FIELDS (AUTH_MAX_CLAIMS + 2)

enum auth_method {
    AUTH_NONE,
    AUTH_API_KEYS,
    AUTH_JWT,
    AUTH_BASIC,
};

/* auth_check's answer when a password hash must be checked: the caller
 * hands out to auth_pool_verify (which may yield), then auth_basic_done. */
#define AUTH_PENDING 1
#define AUTH_MAX_BASIC 4096 /* bytes of base64 in Authorization: Basic */

struct auth_claim_header {
    const char *claim;
    const char *header;
};

/* A route's auth: section as the loader read it. Strings and lists must
 * outlive the policy (the config's arena holds them). */
struct auth_config {
    enum auth_method method;
    const char *identity_header; /* NULL: the identity is not sent upstream */
    const char *realm;           /* the challenge's realm */
    bool hide_credentials;       /* remove the credential before forwarding */
    const char *const *allow;    /* identities let through; none: every one */
    size_t nallow;
    /* api_keys */
    const char *key_header; /* NULL: none (key_query then) */
    const char *key_query;  /* NULL: none */
    const char *keys_file;
    /* jwt */
    const char *issuer;
    const char *const *audiences;
    size_t naudiences;
    const char *jwks_file, *public_key_file, *secret_file; /* at least one */
    unsigned algorithms;                                   /* JWT_*, 0: every one */
    int64_t leeway_ms;
    const char *identity_claim;
    struct auth_claim_header claims[AUTH_MAX_CLAIMS];
    size_t nclaims;
    uint32_t cache_size;
    /* basic */
    const char *users_file;
    int64_t cache_ttl_ms;
};

/* Reports a problem with the setting named key ("keys_file", ...). */
typedef void auth_err_fn(void *arg, const char *key, const char *msg);

struct auth_policy;
/* Builds the policy, reading its files. NULL after reporting through err
 * (out of memory included). Main thread. */
struct auth_policy *auth_policy_new(const struct auth_config *ac, auth_err_fn *err, void *arg);
/* auth_policy_free(NULL) does nothing. */
void auth_policy_free(struct auth_policy *p);

/*
 * What a check found. The request keeps one (pooled: buf is reused);
 * every view points into buf or the policy's config and lives until the
 * next check with it.
 */
struct auth_out {
    const char *identity;                     /* NULL when not authenticated */
    const char *challenge;                    /* WWW-Authenticate of a 401 */
    const char *why;                          /* static: for the access log */
    struct http1_header set[AUTH_MAX_FIELDS]; /* replace what the client sent */
    size_t nset;
    struct http1_header remove[AUTH_MAX_FIELDS];
    size_t nremove;
    bool query_rewritten; /* hide_credentials took the key out of the query */
    const char *query;    /* then the query to send (NULL: none) */
    size_t query_len;
    /* AUTH_PENDING: check password against hash (hash NUL-terminated:
     * the policy's, or a decoy for an unknown user, who then fails) */
    const char *hash;
    const char *password;
    const char *user; /* NULL: unknown, the check fails whatever it says */
    unsigned char cred_digest[32];
    char *buf;
    size_t cap;
};

/* Checks req against p at wall-clock time now (seconds since the epoch).
 * Returns 0, 401, 403 or 503 (see above). Never yields. */
int auth_check(const struct auth_policy *p, const struct http1_request *req, int64_t now,
               struct auth_out *out);
/* After AUTH_PENDING: ok is the hash check's verdict. Fills the identity
 * (and caches the credentials for cache_ttl). Returns 0, 401 or 403. */
int auth_basic_done(const struct auth_policy *p, bool ok, int64_t now, struct auth_out *out);

/* Frees out's buffer. */
void auth_out_fini(struct auth_out *out);

/* Tokens verified in full (signature and claims) by the policy so far:
 * the cache's misses, for tests and metrics. */
unsigned long auth_jwt_verifications(const struct auth_policy *p);

/* Constant-time equality of two n-byte strings (CRYPTO_memcmp). */
bool auth_equal(const void *a, const void *b, size_t n);

#endif
