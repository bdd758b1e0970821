/*
 * jwt: verification of JSON Web Tokens (RFC 7519) in the compact JWS form
 * (RFC 7515), and the key sets they are checked against.
 *
 * Owns: key sets (struct jwt_keys) read from a JWKS document (RFC 7517),
 * a PEM public key or an HMAC secret; the verification of one token
 * against a key set and a policy (algorithms, iss, aud, exp, nbf with a
 * leeway); the claims of a verified token.
 *
 * Algorithms: HS256, RS256, ES256 (P-256) and EdDSA (Ed25519), through
 * OpenSSL 3's EVP. Each key has one family, fixed when it is loaded (an
 * RSA, EC or Ed25519 public key, or an HMAC secret), and a token's alg
 * must name that family: an RSA public key is never used as an HMAC
 * secret (the "algorithm confusion" attack), and "none" is never
 * accepted. A header with "crit" is refused (no extension is understood).
 * A token naming a kid is checked against keys of that kid and keys
 * loaded without one (a PEM key, a secret), never a key of another kid.
 *
 * Bad input: a token is at most JWT_MAX_TOKEN bytes; base64url is strict
 * (no padding, no other alphabet); the JSON of the header and payload is
 * parsed by jansson only after a scan bounds its nesting (JWT_MAX_DEPTH),
 * so a hostile token cannot recurse deep on a small coroutine stack.
 *
 * Pure module: bytes in, results out; no files, no I/O, no libevent.
 * Nothing here yields. Key sets are immutable once loaded and may be
 * shared by threads.
 */
#ifndef FERRY_JWT_H
#define FERRY_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JWT_MAX_TOKEN 8192
#define JWT_MAX_DEPTH 16
#define JWT_MAX_KEYS 64
#define JWT_MIN_SECRET 32 /* bytes of an HS256 secret (RFC 7518 §3.2) */
#define JWT_MIN_RSA_BITS 2048

/* Algorithms (bits of jwt_policy.algs). */
enum jwt_alg {
    JWT_HS256 = 1u << 0,
    JWT_RS256 = 1u << 1,
    JWT_ES256 = 1u << 2,
    JWT_EDDSA = 1u << 3,
};
#define JWT_ALGS_ALL (JWT_HS256 | JWT_RS256 | JWT_ES256 | JWT_EDDSA)

/* What a verification found (negative; 0 is JWT_OK). */
enum jwt_err {
    JWT_OK = 0,
    JWT_E_MALFORMED = -1, /* not three base64url parts of JSON objects */
    JWT_E_ALG = -2,       /* alg none, unknown, not allowed, or crit */
    JWT_E_NO_KEY = -3,    /* no key of the alg's family (and kid) */
    JWT_E_SIGNATURE = -4, /* no key verifies the signature */
    JWT_E_EXPIRED = -5,   /* now is exp + leeway or later */
    JWT_E_NOT_YET = -6,   /* now is before nbf - leeway */
    JWT_E_ISSUER = -7,
    JWT_E_AUDIENCE = -8,
    JWT_E_NOMEM = -9,
};
/* A static description of a jwt_err, for logs. */
const char *jwt_strerror(int err);

/* The algorithm named by name[0..len) ("RS256"...), or 0 when unknown. */
unsigned jwt_alg_from_name(const char *name, size_t len);

/* ---- key sets ---- */

struct jwt_keys;
/* An empty key set, or NULL when out of memory. */
struct jwt_keys *jwt_keys_new(void);
/* jwt_keys_free(NULL) does nothing. */
void jwt_keys_free(struct jwt_keys *ks);
size_t jwt_keys_count(const struct jwt_keys *ks);

/*
 * Adds the keys of a JWKS document ({"keys": [...]}) of len bytes. Keys
 * whose "use" is not "sig" are skipped. A kty other than RSA, EC (P-256),
 * OKP (Ed25519) or oct, an alg that does not fit the key, an RSA key under
 * JWT_MIN_RSA_BITS or a secret under JWT_MIN_SECRET bytes is an error.
 * Returns 0, or -1 with a message in err (cap bytes; names the key by its
 * index and kid).
 */
int jwt_keys_add_jwks(struct jwt_keys *ks, const char *json, size_t len, char *err, size_t cap);
/* Adds a PEM public key (RSA, EC P-256, Ed25519), with an optional kid.
 * Returns 0 or -1 with a message in err. */
int jwt_keys_add_pem(struct jwt_keys *ks, const char *pem, size_t len, const char *kid, char *err,
                     size_t cap);
/* Adds an HS256 secret of len bytes (at least JWT_MIN_SECRET). */
int jwt_keys_add_secret(struct jwt_keys *ks, const void *secret, size_t len, const char *kid,
                        char *err, size_t cap);

/* ---- verification ---- */

struct jwt_policy {
    const struct jwt_keys *keys;
    unsigned algs;                /* JWT_* accepted */
    const char *issuer;           /* NULL: any iss */
    const char *const *audiences; /* one must be in aud; none: aud not checked */
    size_t naudiences;
    int64_t leeway; /* seconds, for exp and nbf */
};

/* A verified token's claims. */
struct jwt_token;

/*
 * Verifies the compact token tok[0..len) at wall-clock time now (seconds
 * since the epoch): the signature with a key of p->keys, then exp, nbf,
 * iss, aud. Returns JWT_OK and the token's claims in *out (jwt_token_free
 * them), or a jwt_err (*out NULL).
 */
int jwt_verify(const struct jwt_policy *p, const char *tok, size_t len, int64_t now,
               struct jwt_token **out);
void jwt_token_free(struct jwt_token *t);

/*
 * Claim name of a verified token as text into buf (cap bytes, NUL-
 * terminated): a string as is, an integer in decimal, true/false. Returns
 * its length, or -1 when the claim is absent, of another type, longer than
 * cap - 1 or holds a byte outside printable ASCII (it could not be a
 * header value).
 */
int jwt_claim_text(const struct jwt_token *t, const char *name, char *buf, size_t cap);
/* The token's exp, when it has one. */
bool jwt_token_exp(const struct jwt_token *t, int64_t *exp);

/*
 * Strict base64url (RFC 4648 §5) without padding: decodes src[0..len) into
 * dst (at least len * 3 / 4 + 1 bytes). Returns the decoded length, or -1
 * for a byte outside the alphabet, '=' or an impossible length.
 */
long jwt_b64url_decode(const char *src, size_t len, unsigned char *dst);

#endif
