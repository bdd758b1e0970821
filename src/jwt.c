/* jwt: see jwt.h. */
#include "jwt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

/* A key's family decides the one algorithm it verifies. */
struct jwt_key {
    unsigned alg; /* JWT_HS256, JWT_RS256, JWT_ES256 or JWT_EDDSA */
    char *kid;    /* NULL: none */
    EVP_PKEY *pkey;
    unsigned char *secret; /* HS256 */
    size_t secret_len;
};

struct jwt_keys {
    struct jwt_key k[JWT_MAX_KEYS];
    size_t n;
};

struct jwt_token {
    json_t *payload;
};

static const struct {
    const char *name;
    unsigned alg;
} ALGS[] = {{"HS256", JWT_HS256}, {"RS256", JWT_RS256}, {"ES256", JWT_ES256}, {"EdDSA", JWT_EDDSA}};

unsigned jwt_alg_from_name(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(ALGS) / sizeof(ALGS[0]); i++)
        if (strlen(ALGS[i].name) == len && memcmp(ALGS[i].name, name, len) == 0)
            return ALGS[i].alg;
    return 0;
}

const char *jwt_strerror(int err)
{
    switch (err) {
    case JWT_OK:
        return "valid";
    case JWT_E_MALFORMED:
        return "malformed token";
    case JWT_E_ALG:
        return "algorithm refused";
    case JWT_E_NO_KEY:
        return "no key for the token";
    case JWT_E_SIGNATURE:
        return "bad signature";
    case JWT_E_EXPIRED:
        return "token expired";
    case JWT_E_NOT_YET:
        return "token not yet valid";
    case JWT_E_ISSUER:
        return "wrong issuer";
    case JWT_E_AUDIENCE:
        return "wrong audience";
    case JWT_E_NOMEM:
        return "out of memory";
    }
    return "unknown error";
}

/* ---- base64url and bounded JSON ---- */

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long jwt_b64url_decode(const char *src, size_t len, unsigned char *dst)
{
    if (len % 4 == 1)
        return -1;
    unsigned long acc = 0;
    int bits = 0;
    long out = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)src[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            dst[out++] = (unsigned char)(acc >> bits);
            acc &= (1ul << bits) - 1;
        }
    }
    return out;
}

/* Decodes into a fresh buffer (NUL-terminated); NULL on a bad encoding or
 * out of memory (*nomem then). */
static unsigned char *b64_dup(const char *src, size_t len, size_t *out_len, bool *nomem)
{
    unsigned char *buf = malloc(len * 3 / 4 + 2);
    if (!buf) {
        *nomem = true;
        return NULL;
    }
    long n = jwt_b64url_decode(src, len, buf);
    if (n < 0) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *out_len = (size_t)n;
    return buf;
}

/* Does the JSON text nest at most max deep? (A scan of brackets outside
 * strings: jansson recurses once per level, on our small stack.) */
static bool depth_ok(const unsigned char *s, size_t len, int max)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                return false;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return true;
}

/* A JSON object from bytes, or NULL. */
static json_t *parse_object(const unsigned char *s, size_t len)
{
    if (!depth_ok(s, len, JWT_MAX_DEPTH))
        return NULL;
    json_error_t e;
    json_t *j = json_loadb((const char *)s, len, JSON_REJECT_DUPLICATES, &e);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* ---- key sets ---- */

struct jwt_keys *jwt_keys_new(void)
{
    return calloc(1, sizeof(struct jwt_keys));
}

void jwt_keys_free(struct jwt_keys *ks)
{
    if (!ks)
        return;
    for (size_t i = 0; i < ks->n; i++) {
        EVP_PKEY_free(ks->k[i].pkey);
        if (ks->k[i].secret)
            OPENSSL_clear_free(ks->k[i].secret, ks->k[i].secret_len);
        free(ks->k[i].kid);
    }
    free(ks);
}

size_t jwt_keys_count(const struct jwt_keys *ks)
{
    return ks->n;
}

/* Appends a key (taking pkey or a copy of the secret). 0 or -1. */
static int add_key(struct jwt_keys *ks, unsigned alg, const char *kid, EVP_PKEY *pkey,
                   const void *secret, size_t secret_len, char *err, size_t cap)
{
    if (ks->n == JWT_MAX_KEYS) {
        snprintf(err, cap, "more than %d keys", JWT_MAX_KEYS);
        EVP_PKEY_free(pkey);
        return -1;
    }
    struct jwt_key *k = &ks->k[ks->n];
    memset(k, 0, sizeof(*k));
    k->alg = alg;
    k->pkey = pkey;
    if (kid && !(k->kid = strdup(kid)))
        goto out_nomem;
    if (secret) {
        if (!(k->secret = malloc(secret_len ? secret_len : 1)))
            goto out_nomem;
        memcpy(k->secret, secret, secret_len);
        k->secret_len = secret_len;
    }
    ks->n++;
    return 0;
out_nomem:
    free(k->kid);
    EVP_PKEY_free(pkey);
    snprintf(err, cap, "out of memory");
    return -1;
}

/* The family of a public key (and whether it is usable). 0 with a message
 * when it is not. */
static unsigned pkey_alg(EVP_PKEY *pkey, char *err, size_t cap)
{
    switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_RSA:
        if (EVP_PKEY_get_bits(pkey) < JWT_MIN_RSA_BITS) {
            snprintf(err, cap, "an RSA key of %d bits (at least %d)", EVP_PKEY_get_bits(pkey),
                     JWT_MIN_RSA_BITS);
            return 0;
        }
        return JWT_RS256;
    case EVP_PKEY_EC: {
        char group[64];
        size_t glen = 0;
        if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                            &glen) ||
            strcmp(group, "prime256v1") != 0) {
            snprintf(err, cap, "an EC key not on P-256 (ES256 only)");
            return 0;
        }
        return JWT_ES256;
    }
    case EVP_PKEY_ED25519:
        return JWT_EDDSA;
    }
    snprintf(err, cap, "a key type other than RSA, EC P-256 or Ed25519");
    return 0;
}

int jwt_keys_add_pem(struct jwt_keys *ks, const char *pem, size_t len, const char *kid, char *err,
                     size_t cap)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio) {
        snprintf(err, cap, "out of memory");
        return -1;
    }
    EVP_PKEY *pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (!pkey) {
        snprintf(err, cap, "no PEM public key (-----BEGIN PUBLIC KEY-----) in it");
        return -1;
    }
    unsigned alg = pkey_alg(pkey, err, cap);
    if (!alg) {
        EVP_PKEY_free(pkey);
        return -1;
    }
    return add_key(ks, alg, kid, pkey, NULL, 0, err, cap);
}

int jwt_keys_add_secret(struct jwt_keys *ks, const void *secret, size_t len, const char *kid,
                        char *err, size_t cap)
{
    if (len < JWT_MIN_SECRET) {
        snprintf(err, cap, "an HS256 secret of %zu bytes (at least %d)", len, JWT_MIN_SECRET);
        return -1;
    }
    return add_key(ks, JWT_HS256, kid, NULL, secret, len, err, cap);
}

/* A base64url member of a JWK, decoded (caller frees), or NULL. */
static unsigned char *jwk_bytes(json_t *jwk, const char *member, size_t *len)
{
    json_t *v = json_object_get(jwk, member);
    bool nomem = false;
    if (!json_is_string(v))
        return NULL;
    return b64_dup(json_string_value(v), json_string_length(v), len, &nomem);
}

/* A public key built from OSSL parameters. */
static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pkey = NULL;
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static EVP_PKEY *jwk_rsa(json_t *jwk)
{
    size_t nlen = 0, elen = 0;
    unsigned char *n = jwk_bytes(jwk, "n", &nlen), *e = jwk_bytes(jwk, "e", &elen);
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *bn = n ? BN_bin2bn(n, (int)nlen, NULL) : NULL,
           *be = e ? BN_bin2bn(e, (int)elen, NULL) : NULL;
    if (bld && bn && be && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
        pkey = pkey_fromdata("RSA", bld);
    BN_free(bn);
    BN_free(be);
    OSSL_PARAM_BLD_free(bld);
    free(n);
    free(e);
    return pkey;
}

static EVP_PKEY *jwk_ec(json_t *jwk)
{
    size_t xlen = 0, ylen = 0;
    unsigned char *x = jwk_bytes(jwk, "x", &xlen), *y = jwk_bytes(jwk, "y", &ylen);
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    unsigned char point[65];
    if (bld && x && y && xlen == 32 && ylen == 32 && json_is_string(json_object_get(jwk, "crv")) &&
        strcmp(json_string_value(json_object_get(jwk, "crv")), "P-256") == 0) {
        point[0] = 4; /* uncompressed */
        memcpy(point + 1, x, 32);
        memcpy(point + 33, y, 32);
        if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) &&
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)))
            pkey = pkey_fromdata("EC", bld);
    }
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    return pkey;
}

static EVP_PKEY *jwk_okp(json_t *jwk)
{
    size_t xlen = 0;
    unsigned char *x = jwk_bytes(jwk, "x", &xlen);
    EVP_PKEY *pkey = NULL;
    json_t *crv = json_object_get(jwk, "crv");
    if (x && xlen == 32 && json_is_string(crv) && strcmp(json_string_value(crv), "Ed25519") == 0)
        pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, xlen);
    free(x);
    return pkey;
}

/* One JWK into ks. 0, 1 (skipped: not a signing key) or -1. */
static int add_jwk(struct jwt_keys *ks, json_t *jwk, char *err, size_t cap)
{
    json_t *use = json_object_get(jwk, "use"), *kty = json_object_get(jwk, "kty"),
           *kid = json_object_get(jwk, "kid"), *alg = json_object_get(jwk, "alg");
    if (use && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0))
        return 1;
    if (!json_is_string(kty)) {
        snprintf(err, cap, "no kty");
        return -1;
    }
    if (kid && !json_is_string(kid)) {
        snprintf(err, cap, "kid is not a string");
        return -1;
    }
    const char *t = json_string_value(kty), *kids = kid ? json_string_value(kid) : NULL;
    unsigned want = 0;
    EVP_PKEY *pkey = NULL;
    if (strcmp(t, "oct") == 0) {
        size_t len = 0;
        unsigned char *k = jwk_bytes(jwk, "k", &len);
        if (!k) {
            snprintf(err, cap, "an oct key without a base64url k");
            return -1;
        }
        want = JWT_HS256;
        if (!alg || (json_is_string(alg) &&
                     jwt_alg_from_name(json_string_value(alg), json_string_length(alg)) == want)) {
            int rc = jwt_keys_add_secret(ks, k, len, kids, err, cap);
            OPENSSL_clear_free(k, len);
            return rc;
        }
        OPENSSL_clear_free(k, len);
    } else {
        if (strcmp(t, "RSA") == 0)
            pkey = jwk_rsa(jwk);
        else if (strcmp(t, "EC") == 0)
            pkey = jwk_ec(jwk);
        else if (strcmp(t, "OKP") == 0)
            pkey = jwk_okp(jwk);
        else {
            snprintf(err, cap, "kty %.32s is not supported (RSA, EC, OKP, oct)", t);
            return -1;
        }
        if (!pkey) {
            snprintf(err, cap,
                     "a %s key that does not load (missing or bad members; EC: P-256, "
                     "OKP: Ed25519)",
                     t);
            return -1;
        }
        want = pkey_alg(pkey, err, cap);
        if (!want) {
            EVP_PKEY_free(pkey);
            return -1;
        }
        if (!alg || (json_is_string(alg) &&
                     jwt_alg_from_name(json_string_value(alg), json_string_length(alg)) == want))
            return add_key(ks, want, kids, pkey, NULL, 0, err, cap);
        EVP_PKEY_free(pkey);
    }
    snprintf(err, cap, "alg %.32s does not fit a %s key (or is not supported)",
             json_is_string(alg) ? json_string_value(alg) : "?", t);
    return -1;
}

int jwt_keys_add_jwks(struct jwt_keys *ks, const char *json, size_t len, char *err, size_t cap)
{
    json_t *doc = parse_object((const unsigned char *)json, len);
    json_t *keys = doc ? json_object_get(doc, "keys") : NULL;
    if (!json_is_array(keys)) {
        snprintf(err, cap, "not a JWKS document (a JSON object with a \"keys\" list)");
        json_decref(doc);
        return -1;
    }
    size_t i;
    json_t *jwk;
    json_array_foreach(keys, i, jwk)
    {
        char why[200];
        int rc = json_is_object(jwk) ? add_jwk(ks, jwk, why, sizeof(why)) : -1;
        if (!json_is_object(jwk))
            snprintf(why, sizeof(why), "not a JSON object");
        if (rc < 0) {
            json_t *kid = json_is_object(jwk) ? json_object_get(jwk, "kid") : NULL;
            snprintf(err, cap, "keys[%zu]%s%.64s%s: %s", i, json_is_string(kid) ? " (kid " : "",
                     json_is_string(kid) ? json_string_value(kid) : "",
                     json_is_string(kid) ? ")" : "", why);
            json_decref(doc);
            return -1;
        }
    }
    json_decref(doc);
    return 0;
}

/* ---- verification ---- */

/* ES256 signatures are r || s (32 bytes each); EVP wants DER. */
static int es256_der(const unsigned char *sig, size_t len, unsigned char **der)
{
    if (len != 64)
        return -1;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
    if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
        ECDSA_SIG_free(es);
        BN_free(r);
        BN_free(s);
        return -1;
    }
    *der = NULL;
    int n = i2d_ECDSA_SIG(es, der);
    ECDSA_SIG_free(es);
    return n;
}

/* Does key k verify sig over data? */
static bool verify_with(const struct jwt_key *k, const unsigned char *data, size_t len,
                        const unsigned char *sig, size_t slen)
{
    if (k->alg == JWT_HS256) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned mlen = 0;
        if (!HMAC(EVP_sha256(), k->secret, (int)k->secret_len, data, len, mac, &mlen))
            return false;
        return slen == mlen && CRYPTO_memcmp(mac, sig, mlen) == 0;
    }
    unsigned char *der = NULL;
    if (k->alg == JWT_ES256) {
        int n = es256_der(sig, slen, &der);
        if (n <= 0)
            return false;
        sig = der;
        slen = (size_t)n;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx &&
              EVP_DigestVerifyInit(ctx, NULL, k->alg == JWT_EDDSA ? NULL : EVP_sha256(), NULL,
                                   k->pkey) == 1 &&
              EVP_DigestVerify(ctx, sig, slen, data, len) == 1;
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    return ok;
}

/* A NumericDate claim: absent (1), a number (0, *out), else -1. A
 * fraction rounds up: "now" is whole seconds, and now < 100.5 is now <
 * 101 (so exp 100.5 still admits 100, nbf 100.5 refuses it). */
static int numeric_date(json_t *payload, const char *name, int64_t *out)
{
    json_t *v = json_object_get(payload, name);
    if (!v)
        return 1;
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d > -9e15 && d < 9e15))
            return -1;
        int64_t t = (int64_t)d;
        *out = (double)t < d ? t + 1 : t;
        return 0;
    }
    return -1;
}

/*
 * exp and nbf with the leeway (RFC 7519 §4.1.4, §4.1.5): the token is
 * valid while now < exp (at exp it has expired) and from nbf on, each
 * widened by the leeway. Claims near the ends of int64 (exp 2^63 - 1)
 * saturate instead of wrapping into the past.
 */
static int check_claims(const struct jwt_policy *p, json_t *payload, int64_t now)
{
    int64_t t;
    int rc = numeric_date(payload, "exp", &t);
    if (rc < 0)
        return JWT_E_MALFORMED;
    if (rc == 0 && t <= INT64_MAX - p->leeway && now >= t + p->leeway)
        return JWT_E_EXPIRED;
    rc = numeric_date(payload, "nbf", &t);
    if (rc < 0)
        return JWT_E_MALFORMED;
    if (rc == 0 && t >= INT64_MIN + p->leeway && now < t - p->leeway)
        return JWT_E_NOT_YET;
    if (p->issuer) {
        json_t *iss = json_object_get(payload, "iss");
        if (!json_is_string(iss) || strcmp(json_string_value(iss), p->issuer) != 0)
            return JWT_E_ISSUER;
    }
    if (p->naudiences) {
        json_t *aud = json_object_get(payload, "aud"), *one;
        size_t i;
        for (size_t a = 0; a < p->naudiences; a++) {
            if (json_is_string(aud) && strcmp(json_string_value(aud), p->audiences[a]) == 0)
                return JWT_OK;
            if (json_is_array(aud)) {
                json_array_foreach(aud, i, one)
                {
                    if (json_is_string(one) && strcmp(json_string_value(one), p->audiences[a]) == 0)
                        return JWT_OK;
                }
            }
        }
        return JWT_E_AUDIENCE;
    }
    return JWT_OK;
}

/* The header's alg (checked against the policy) and kid. */
static int check_header(const struct jwt_policy *p, json_t *hdr, unsigned *alg, const char **kid)
{
    json_t *a = json_object_get(hdr, "alg"), *k = json_object_get(hdr, "kid");
    if (!json_is_string(a) || json_object_get(hdr, "crit"))
        return JWT_E_ALG;
    *alg = jwt_alg_from_name(json_string_value(a), json_string_length(a));
    if (!*alg || !(*alg & p->algs))
        return JWT_E_ALG; /* "none" and every unknown name land here */
    if (k && !json_is_string(k))
        return JWT_E_MALFORMED;
    *kid = k ? json_string_value(k) : NULL;
    return JWT_OK;
}

/* The signature over tok[0..signed_len) checked with the keys that fit. */
static int check_signature(const struct jwt_policy *p, unsigned alg, const char *kid,
                           const char *tok, size_t signed_len, const unsigned char *sig,
                           size_t slen)
{
    bool any = false;
    for (size_t i = 0; i < p->keys->n; i++) {
        const struct jwt_key *k = &p->keys->k[i];
        /* A kid is a hint (RFC 7515 §4.1.4): a key with another kid is
         * skipped, one loaded without a kid (a PEM key, a secret) is tried. */
        if (k->alg != alg || (kid && k->kid && strcmp(k->kid, kid) != 0))
            continue;
        any = true;
        if (verify_with(k, (const unsigned char *)tok, signed_len, sig, slen))
            return JWT_OK;
    }
    return any ? JWT_E_SIGNATURE : JWT_E_NO_KEY;
}

int jwt_verify(const struct jwt_policy *p, const char *tok, size_t len, int64_t now,
               struct jwt_token **out)
{
    *out = NULL;
    if (len == 0 || len > JWT_MAX_TOKEN)
        return JWT_E_MALFORMED;
    const char *dot1 = memchr(tok, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - tok)) : NULL;
    if (!dot1 || !dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - tok)))
        return JWT_E_MALFORMED;
    size_t hlen, plen, slen;
    bool nomem = false;
    unsigned char *h = b64_dup(tok, (size_t)(dot1 - tok), &hlen, &nomem);
    unsigned char *pl = h ? b64_dup(dot1 + 1, (size_t)(dot2 - dot1 - 1), &plen, &nomem) : NULL;
    unsigned char *sig =
        pl ? b64_dup(dot2 + 1, len - (size_t)(dot2 + 1 - tok), &slen, &nomem) : NULL;
    json_t *hdr = NULL, *payload = NULL;
    unsigned alg = 0;
    const char *kid = NULL;
    int rc = JWT_E_MALFORMED;
    if (!sig || slen == 0)
        goto out_free;
    if (!(hdr = parse_object(h, hlen)) || !(payload = parse_object(pl, plen)))
        goto out_free;
    if ((rc = check_header(p, hdr, &alg, &kid)) != JWT_OK)
        goto out_free;
    if ((rc = check_signature(p, alg, kid, tok, (size_t)(dot2 - tok), sig, slen)) != JWT_OK)
        goto out_free;
    if ((rc = check_claims(p, payload, now)) != JWT_OK)
        goto out_free;
    struct jwt_token *t = malloc(sizeof(*t));
    if (!t) {
        rc = JWT_E_NOMEM;
        goto out_free;
    }
    t->payload = payload;
    payload = NULL;
    *out = t;
out_free:
    if (nomem)
        rc = JWT_E_NOMEM;
    json_decref(hdr);
    json_decref(payload);
    free(h);
    free(pl);
    free(sig);
    return rc;
}

void jwt_token_free(struct jwt_token *t)
{
    if (!t)
        return;
    json_decref(t->payload);
    free(t);
}

bool jwt_token_exp(const struct jwt_token *t, int64_t *exp)
{
    return numeric_date(t->payload, "exp", exp) == 0;
}

int jwt_claim_text(const struct jwt_token *t, const char *name, char *buf, size_t cap)
{
    json_t *v = json_object_get(t->payload, name);
    int n;
    if (json_is_string(v)) {
        size_t len = json_string_length(v);
        if (len >= cap)
            return -1;
        memcpy(buf, json_string_value(v), len);
        buf[len] = '\0';
        n = (int)len;
    } else if (json_is_integer(v)) {
        n = snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
    } else if (json_is_boolean(v)) {
        n = snprintf(buf, cap, "%s", json_is_true(v) ? "true" : "false");
    } else {
        return -1;
    }
    if (n < 0 || (size_t)n >= cap)
        return -1;
    for (int i = 0; i < n; i++)
        if ((unsigned char)buf[i] < 0x20 || (unsigned char)buf[i] > 0x7e)
            return -1;
    return n;
}
