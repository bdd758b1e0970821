/*
 * Unit tests for jwt: tokens signed at test time by the openssl command
 * (RS256, ES256, EdDSA, HS256) verified against PEM keys, secrets and JWKS
 * documents; alg none and algorithm confusion refused; exp, nbf and the
 * leeway; iss and aud; strict base64url; hostile JSON.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "check_helpers.h"
#include "jwt.h"

static char dir[64];
static const char SECRET[] = "0123456789abcdef0123456789abcdef-test-secret";

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
    static char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_jwt: failed: %s\n", cmd);
        exit(1);
    }
}

static char *slurp_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    char *buf = malloc(1 << 20);
    *len = fread(buf, 1, (1 << 20) - 1, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert(f != NULL);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void b64url(const unsigned char *in, size_t len, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < len ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < len ? in[i + 2] : 0);
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        if (i + 1 < len)
            out[o++] = a[v >> 6 & 63];
        if (i + 2 < len)
            out[o++] = a[v & 63];
    }
    out[o] = '\0';
}

/* Keys made once per run (forked tests each see them). */
static void make_keys(void)
{
    snprintf(dir, sizeof(dir), "/tmp/ferry-jwt-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("test_jwt: mkdtemp");
        exit(1);
    }
    sh("cd %s && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem "
       "2>/dev/null && openssl pkey -in rsa.pem -pubout -out rsa.pub",
       dir);
    sh("cd %s && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa2.pem "
       "2>/dev/null && openssl pkey -in rsa2.pem -pubout -out rsa2.pub",
       dir);
    sh("cd %s && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa1k.pem "
       "2>/dev/null && openssl pkey -in rsa1k.pem -pubout -out rsa1k.pub",
       dir);
    sh("cd %s && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.pem && "
       "openssl pkey -in ec.pem -pubout -out ec.pub",
       dir);
    sh("cd %s && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out ec384.pem && "
       "openssl pkey -in ec384.pem -pubout -out ec384.pub",
       dir);
    sh("cd %s && openssl genpkey -algorithm ED25519 -out ed.pem && "
       "openssl pkey -in ed.pem -pubout -out ed.pub",
       dir);
}

static void remove_keys(void)
{
    sh("rm -rf %s", dir);
}

/*
 * A token: header JSON, payload JSON, signed with the openssl command by
 * alg ("RS256" with keyfile, "ES256", "EdDSA", "HS256" with the secret
 * text as keyfile, "none"). Returns a malloc'd token.
 */
static char *make_token(const char *alg, const char *keyfile, const char *header,
                        const char *payload)
{
    static char h[4096], p[8192];
    char *tok = malloc(16384), path[256], sigpath[256];
    b64url((const unsigned char *)header, strlen(header), h);
    b64url((const unsigned char *)payload, strlen(payload), p);
    snprintf(tok, 16384, "%s.%s", h, p);
    if (strcmp(alg, "none") == 0) {
        strcat(tok, ".");
        return tok;
    }
    snprintf(path, sizeof(path), "%s/input", dir);
    snprintf(sigpath, sizeof(sigpath), "%s/sig", dir);
    write_file(path, tok, strlen(tok));
    if (strcmp(alg, "HS256") == 0) {
        static char hex[4096];
        hex[0] = '\0';
        for (size_t i = 0; keyfile[i]; i++)
            snprintf(hex + 2 * i, 3, "%02x", (unsigned char)keyfile[i]);
        sh("openssl dgst -sha256 -mac HMAC -macopt hexkey:%s -binary -out %s %s", hex, sigpath,
           path);
    } else if (strcmp(alg, "EdDSA") == 0) {
        sh("openssl pkeyutl -sign -rawin -inkey %s/%s -in %s -out %s", dir, keyfile, path, sigpath);
    } else {
        sh("openssl dgst -sha256 -sign %s/%s -out %s %s", dir, keyfile, sigpath, path);
    }
    size_t slen;
    unsigned char *sig = (unsigned char *)slurp_file(sigpath, &slen);
    unsigned char raw[64];
    if (strcmp(alg, "ES256") == 0) { /* DER -> r || s */
        const unsigned char *q = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)slen);
        ck_assert(es != NULL);
        BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
        BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
        ECDSA_SIG_free(es);
        memcpy(sig, raw, 64);
        slen = 64;
    }
    size_t n = strlen(tok);
    tok[n] = '.';
    b64url(sig, slen, tok + n + 1);
    free(sig);
    return tok;
}

static struct jwt_keys *pem_keys(const char *pub)
{
    char path[256], err[256];
    size_t len;
    snprintf(path, sizeof(path), "%s/%s", dir, pub);
    char *pem = slurp_file(path, &len);
    struct jwt_keys *ks = jwt_keys_new();
    ck_assert_msg(jwt_keys_add_pem(ks, pem, len, NULL, err, sizeof(err)) == 0, "%s", err);
    free(pem);
    return ks;
}

static int verify(const struct jwt_keys *ks, const char *tok, int64_t leeway)
{
    struct jwt_policy p = {.keys = ks, .algs = JWT_ALGS_ALL, .leeway = leeway};
    struct jwt_token *t = NULL;
    int rc = jwt_verify(&p, tok, strlen(tok), time(NULL), &t);
    ck_assert(rc == JWT_OK ? t != NULL : t == NULL);
    jwt_token_free(t);
    return rc;
}

static char *payload_at(int64_t exp, int64_t nbf)
{
    static char buf[256];
    snprintf(buf, sizeof(buf), "{\"sub\":\"alice\",\"exp\":%lld,\"nbf\":%lld}", (long long)exp,
             (long long)nbf);
    return buf;
}

START_TEST(base64url_strict)
{
    unsigned char out[16];
    ck_assert_int_eq(jwt_b64url_decode("aGk", 3, out), 2);
    ck_assert(memcmp(out, "hi", 2) == 0);
    ck_assert_int_eq(jwt_b64url_decode("-_8", 3, out), 2);
    ck_assert_int_eq(jwt_b64url_decode("aGk=", 4, out), -1);  /* padding */
    ck_assert_int_eq(jwt_b64url_decode("a+k", 3, out), -1);   /* base64, not base64url */
    ck_assert_int_eq(jwt_b64url_decode("aGkhZ", 5, out), -1); /* impossible length */
    ck_assert_int_eq(jwt_b64url_decode("", 0, out), 0);
}
END_TEST

START_TEST(each_algorithm_verifies)
{
    int64_t now = time(NULL);
    const char *pl = payload_at(now + 600, now - 10);
    struct {
        const char *alg, *key, *pub;
    } cases[] = {{"RS256", "rsa.pem", "rsa.pub"},
                 {"ES256", "ec.pem", "ec.pub"},
                 {"EdDSA", "ed.pem", "ed.pub"}};
    for (size_t i = 0; i < CHECK_NELEMS(cases); i++) {
        char hdr[64];
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", cases[i].alg);
        char *tok = make_token(cases[i].alg, cases[i].key, hdr, pl);
        struct jwt_keys *ks = pem_keys(cases[i].pub);
        ck_assert_msg(verify(ks, tok, 0) == JWT_OK, "%s", cases[i].alg);
        /* another payload under the same signature */
        char *other = make_token(cases[i].alg, cases[i].key, hdr, "{\"sub\":\"root\"}");
        char *spliced = malloc(strlen(tok) + strlen(other) + 1);
        size_t olen = (size_t)(strrchr(other, '.') - other);
        memcpy(spliced, other, olen);
        strcpy(spliced + olen, strrchr(tok, '.'));
        ck_assert_int_eq(verify(ks, spliced, 0), JWT_E_SIGNATURE);
        /* a flipped signature byte */
        char *sig = strrchr(tok, '.') + 10;
        *sig = *sig == 'A' ? 'B' : 'A';
        ck_assert_int_eq(verify(ks, tok, 0), JWT_E_SIGNATURE);
        free(spliced);
        free(other);
        jwt_keys_free(ks);
        free(tok);
    }
    char *tok = make_token("HS256", SECRET, "{\"alg\":\"HS256\"}", pl);
    struct jwt_keys *ks = jwt_keys_new();
    char err[128];
    ck_assert(jwt_keys_add_secret(ks, SECRET, strlen(SECRET), NULL, err, sizeof(err)) == 0);
    ck_assert_int_eq(verify(ks, tok, 0), JWT_OK);
    jwt_keys_free(ks);
    ks = jwt_keys_new();
    ck_assert(jwt_keys_add_secret(ks, "another-secret-of-thirty-two-bytes!!", 36, NULL, err,
                                  sizeof(err)) == 0);
    ck_assert_int_eq(verify(ks, tok, 0), JWT_E_SIGNATURE);
    jwt_keys_free(ks);
    free(tok);
}
END_TEST

START_TEST(wrong_key_of_the_family)
{
    int64_t now = time(NULL);
    char *tok = make_token("RS256", "rsa.pem", "{\"alg\":\"RS256\"}", payload_at(now + 60, now));
    struct jwt_keys *ks = pem_keys("rsa2.pub");
    ck_assert_int_eq(verify(ks, tok, 0), JWT_E_SIGNATURE);
    jwt_keys_free(ks);
    free(tok);
}
END_TEST

/* Identity providers put a kid in every token; a key loaded without one
 * (a PEM public key, a secret file) is tried for any kid, as a key whose
 * kid differs is not (RFC 7515 4.1.4: the kid is a hint). */
START_TEST(key_without_kid_verifies_a_token_with_one)
{
    int64_t now = time(NULL);
    char *tok = make_token("RS256", "rsa.pem", "{\"alg\":\"RS256\",\"kid\":\"idp-2024\"}",
                           payload_at(now + 60, now));
    struct jwt_keys *ks = pem_keys("rsa.pub");
    ck_assert_int_eq(verify(ks, tok, 0), JWT_OK);
    jwt_keys_free(ks);
    /* the wrong key without a kid: tried, and its signature fails */
    ks = pem_keys("rsa2.pub");
    ck_assert_int_eq(verify(ks, tok, 0), JWT_E_SIGNATURE);
    jwt_keys_free(ks);
    free(tok);
}
END_TEST

START_TEST(alg_none_refused)
{
    int64_t now = time(NULL);
    struct jwt_keys *ks = pem_keys("rsa.pub");
    char *tok = make_token("none", NULL, "{\"alg\":\"none\"}", payload_at(now + 60, now));
    ck_assert_int_ne(verify(ks, tok, 0), JWT_OK);
    /* with a signature part, still refused for its alg */
    char *t2 = malloc(strlen(tok) + 8);
    sprintf(t2, "%sAAAA", tok);
    ck_assert_int_eq(verify(ks, t2, 0), JWT_E_ALG);
    for (const char *const *a = (const char *const[]){"None", "NONE", "nOnE", "", "RS512", NULL};
         *a; a++) {
        char hdr[64];
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\"}", *a);
        char *t3 = make_token("RS256", "rsa.pem", hdr, payload_at(now + 60, now));
        ck_assert_msg(verify(ks, t3, 0) == JWT_E_ALG, "alg %s", *a);
        free(t3);
    }
    char *t4 = make_token("RS256", "rsa.pem", "{\"typ\":\"JWT\"}", payload_at(now + 60, now));
    ck_assert_int_eq(verify(ks, t4, 0), JWT_E_ALG); /* no alg */
    char *t5 = make_token("RS256", "rsa.pem", "{\"alg\":\"RS256\",\"crit\":[\"b64\"]}",
                          payload_at(now + 60, now));
    ck_assert_int_eq(verify(ks, t5, 0), JWT_E_ALG); /* an extension we do not understand */
    free(t5);
    free(t4);
    free(t2);
    free(tok);
    jwt_keys_free(ks);
}
END_TEST

/* HS256 "signed" with the RSA public key's PEM as the HMAC secret: the
 * classic confusion. The key set holds the RSA key only: refused. */
START_TEST(algorithm_confusion_refused)
{
    int64_t now = time(NULL);
    char path[256];
    size_t len;
    snprintf(path, sizeof(path), "%s/rsa.pub", dir);
    char *pem = slurp_file(path, &len);
    char *tok = make_token("HS256", pem, "{\"alg\":\"HS256\"}", payload_at(now + 60, now));
    struct jwt_keys *ks = pem_keys("rsa.pub");
    ck_assert_int_eq(verify(ks, tok, 0), JWT_E_NO_KEY);
    /* and an RS256 token is not accepted by an HMAC-only set */
    struct jwt_keys *hs = jwt_keys_new();
    char err[128];
    ck_assert(jwt_keys_add_secret(hs, pem, len, NULL, err, sizeof(err)) == 0);
    char *rs = make_token("RS256", "rsa.pem", "{\"alg\":\"RS256\"}", payload_at(now + 60, now));
    ck_assert_int_eq(verify(hs, rs, 0), JWT_E_NO_KEY);
    /* a policy restricted to RS256 refuses HS256 before any key is tried */
    struct jwt_policy p = {.keys = hs, .algs = JWT_RS256};
    struct jwt_token *t;
    ck_assert_int_eq(jwt_verify(&p, tok, strlen(tok), now, &t), JWT_E_ALG);
    jwt_keys_free(hs);
    free(rs);
    jwt_keys_free(ks);
    free(tok);
    free(pem);
}
END_TEST

START_TEST(exp_nbf_leeway)
{
    int64_t now = time(NULL);
    struct jwt_keys *ks = pem_keys("ec.pub");
    struct {
        int64_t exp, nbf, leeway;
        int want;
    } cases[] = {
        {now + 600, now - 600, 0, JWT_OK},
        {now - 30, now - 600, 60, JWT_OK},         /* expired, inside the leeway */
        {now - 120, now - 600, 60, JWT_E_EXPIRED}, /* beyond it */
        {now - 5, now - 600, 0, JWT_E_EXPIRED},
        {now + 600, now + 30, 60, JWT_OK},         /* not yet, inside the leeway */
        {now + 600, now + 120, 60, JWT_E_NOT_YET}, /* beyond it */
    };
    for (size_t i = 0; i < CHECK_NELEMS(cases); i++) {
        char *tok = make_token("ES256", "ec.pem", "{\"alg\":\"ES256\"}",
                               payload_at(cases[i].exp, cases[i].nbf));
        ck_assert_msg(verify(ks, tok, cases[i].leeway) == cases[i].want, "case %zu", i);
        free(tok);
    }
    /* exp of another type is malformed, not "no exp" */
    char *tok =
        make_token("ES256", "ec.pem", "{\"alg\":\"ES256\"}", "{\"sub\":\"a\",\"exp\":\"x\"}");
    ck_assert_int_eq(verify(ks, tok, 0), JWT_E_MALFORMED);
    free(tok);
    jwt_keys_free(ks);
}
END_TEST

static int verify_at(const struct jwt_keys *ks, const char *payload, int64_t now, int64_t leeway)
{
    char *tok = make_token("ES256", "ec.pem", "{\"alg\":\"ES256\"}", payload);
    struct jwt_policy p = {.keys = ks, .algs = JWT_ALGS_ALL, .leeway = leeway};
    struct jwt_token *t = NULL;
    int rc = jwt_verify(&p, tok, strlen(tok), now, &t);
    ck_assert(rc == JWT_OK ? t != NULL : t == NULL);
    jwt_token_free(t);
    free(tok);
    return rc;
}

/* RFC 7519: valid while now < exp (at exp it has expired), and from nbf
 * on; a fraction of a second counts; claims at the ends of int64 do not
 * wrap around into the past or the future. */
START_TEST(exp_nbf_boundaries)
{
    struct jwt_keys *ks = pem_keys("ec.pub");
    const int64_t now = 1700000000;
    struct {
        const char *payload;
        int64_t leeway;
        int want;
    } cases[] = {
        {"{\"sub\":\"a\",\"exp\":1700000000}", 0, JWT_E_EXPIRED}, /* exp == now */
        {"{\"sub\":\"a\",\"exp\":1700000001}", 0, JWT_OK},
        {"{\"sub\":\"a\",\"exp\":1699999940}", 60, JWT_E_EXPIRED}, /* exp + leeway == now */
        {"{\"sub\":\"a\",\"exp\":1699999941}", 60, JWT_OK},
        {"{\"sub\":\"a\",\"exp\":1700000000.5}", 0, JWT_OK}, /* now < 1700000000.5 */
        {"{\"sub\":\"a\",\"exp\":1699999999.5}", 0, JWT_E_EXPIRED},
        {"{\"sub\":\"a\",\"nbf\":1700000000}", 0, JWT_OK}, /* nbf == now */
        {"{\"sub\":\"a\",\"nbf\":1700000001}", 0, JWT_E_NOT_YET},
        {"{\"sub\":\"a\",\"nbf\":1700000060}", 60, JWT_OK},
        {"{\"sub\":\"a\",\"nbf\":1700000061}", 60, JWT_E_NOT_YET},
        {"{\"sub\":\"a\",\"nbf\":1699999999.5}", 0, JWT_OK},
        {"{\"sub\":\"a\",\"nbf\":1700000000.5}", 0, JWT_E_NOT_YET},
        {"{\"sub\":\"a\",\"exp\":9223372036854775807}", 60, JWT_OK},
        {"{\"sub\":\"a\",\"exp\":9223372036854775800}", 60, JWT_OK},
        {"{\"sub\":\"a\",\"nbf\":-9223372036854775808}", 60, JWT_OK},
        {"{\"sub\":\"a\",\"nbf\":-9223372036854775800}", 60, JWT_OK},
        {"{\"sub\":\"a\",\"exp\":-9223372036854775808}", 60, JWT_E_EXPIRED},
        {"{\"sub\":\"a\",\"nbf\":9223372036854775807}", 60, JWT_E_NOT_YET},
    };
    for (size_t i = 0; i < CHECK_NELEMS(cases); i++)
        ck_assert_msg(verify_at(ks, cases[i].payload, now, cases[i].leeway) == cases[i].want,
                      "case %zu: %s", i, cases[i].payload);
    jwt_keys_free(ks);
}
END_TEST

START_TEST(issuer_audience)
{
    int64_t now = time(NULL);
    struct jwt_keys *ks = pem_keys("ed.pub");
    const char *auds[] = {"api", "other"};
    struct jwt_policy p = {.keys = ks,
                           .algs = JWT_ALGS_ALL,
                           .issuer = "https://idp.test",
                           .audiences = auds,
                           .naudiences = 2};
    struct {
        const char *payload;
        int want;
    } cases[] = {
        {"{\"iss\":\"https://idp.test\",\"aud\":\"api\"}", JWT_OK},
        {"{\"iss\":\"https://idp.test\",\"aud\":[\"x\",\"other\"]}", JWT_OK},
        {"{\"iss\":\"https://evil.test\",\"aud\":\"api\"}", JWT_E_ISSUER},
        {"{\"aud\":\"api\"}", JWT_E_ISSUER},
        {"{\"iss\":\"https://idp.test\",\"aud\":\"apix\"}", JWT_E_AUDIENCE},
        {"{\"iss\":\"https://idp.test\"}", JWT_E_AUDIENCE},
        {"{\"iss\":\"https://idp.test\",\"aud\":[1,2]}", JWT_E_AUDIENCE},
    };
    for (size_t i = 0; i < CHECK_NELEMS(cases); i++) {
        char *tok = make_token("EdDSA", "ed.pem", "{\"alg\":\"EdDSA\"}", cases[i].payload);
        struct jwt_token *t = NULL;
        ck_assert_msg(jwt_verify(&p, tok, strlen(tok), now, &t) == cases[i].want, "case %zu", i);
        jwt_token_free(t);
        free(tok);
    }
    jwt_keys_free(ks);
}
END_TEST

START_TEST(claims_as_text)
{
    int64_t now = time(NULL);
    struct jwt_keys *ks = pem_keys("ed.pub");
    char *tok =
        make_token("EdDSA", "ed.pem", "{\"alg\":\"EdDSA\"}",
                   "{\"sub\":\"alice\",\"n\":42,\"admin\":true,\"obj\":{},\"bad\":\"a\\r\\nb\","
                   "\"exp\":9999999999}");
    struct jwt_policy p = {.keys = ks, .algs = JWT_ALGS_ALL};
    struct jwt_token *t;
    ck_assert_int_eq(jwt_verify(&p, tok, strlen(tok), now, &t), JWT_OK);
    char buf[16];
    ck_assert_int_eq(jwt_claim_text(t, "sub", buf, sizeof(buf)), 5);
    ck_assert_str_eq(buf, "alice");
    ck_assert_int_eq(jwt_claim_text(t, "n", buf, sizeof(buf)), 2);
    ck_assert_str_eq(buf, "42");
    ck_assert_int_eq(jwt_claim_text(t, "admin", buf, sizeof(buf)), 4);
    ck_assert_int_eq(jwt_claim_text(t, "obj", buf, sizeof(buf)), -1);
    ck_assert_int_eq(jwt_claim_text(t, "bad", buf, sizeof(buf)), -1); /* CR LF: no header */
    ck_assert_int_eq(jwt_claim_text(t, "none", buf, sizeof(buf)), -1);
    ck_assert_int_eq(jwt_claim_text(t, "sub", buf, 5), -1); /* does not fit */
    int64_t exp;
    ck_assert(jwt_token_exp(t, &exp) && exp == 9999999999LL);
    jwt_token_free(t);
    free(tok);
    jwt_keys_free(ks);
}
END_TEST

START_TEST(malformed_tokens)
{
    int64_t now = time(NULL);
    struct jwt_keys *ks = pem_keys("rsa.pub");
    char *good = make_token("RS256", "rsa.pem", "{\"alg\":\"RS256\"}", payload_at(now + 60, now));
    const char *bad[] = {"", ".", "..", "a.b", "a.b.c.d", "!!!.???.***", "eyJ=.eyJ=.AAAA"};
    for (size_t i = 0; i < CHECK_NELEMS(bad); i++)
        ck_assert_msg(verify(ks, bad[i], 0) == JWT_E_MALFORMED, "%s", bad[i]);
    /* four parts */
    char *four = malloc(strlen(good) + 8);
    sprintf(four, "%s.AAAA", good);
    ck_assert_int_eq(verify(ks, four, 0), JWT_E_MALFORMED);
    free(four);
    /* a header that is not an object, or nests deep */
    char *arr = make_token("RS256", "rsa.pem", "[\"RS256\"]", "{}");
    ck_assert_int_eq(verify(ks, arr, 0), JWT_E_MALFORMED);
    free(arr);
    char *deep = malloc(6000);
    strcpy(deep, "{\"a\":");
    for (int i = 0; i < 2500; i++)
        strcat(deep, "[");
    char *dtok = make_token("RS256", "rsa.pem", "{\"alg\":\"RS256\"}", deep);
    ck_assert_int_eq(verify(ks, dtok, 0), JWT_E_MALFORMED);
    free(dtok);
    free(deep);
    /* duplicate members */
    char *dup = make_token("RS256", "rsa.pem", "{\"alg\":\"RS256\",\"alg\":\"none\"}", "{}");
    ck_assert_int_eq(verify(ks, dup, 0), JWT_E_MALFORMED);
    free(dup);
    /* too long */
    char *huge = malloc(JWT_MAX_TOKEN + 2);
    memset(huge, 'A', JWT_MAX_TOKEN + 1);
    huge[JWT_MAX_TOKEN + 1] = '\0';
    ck_assert_int_eq(verify(ks, huge, 0), JWT_E_MALFORMED);
    free(huge);
    /* the signature in standard base64 */
    char *plus = strdup(good);
    plus[strlen(plus) - 2] = '+';
    ck_assert_int_eq(verify(ks, plus, 0), JWT_E_MALFORMED);
    free(plus);
    free(good);
    jwt_keys_free(ks);
}
END_TEST

/* A JWKS holding one key of each family, built from the PEM keys. */
static char *jwks_of_all(void)
{
    char path[256], n[1024], e[16], x[128], y[128], ox[128], k[128];
    size_t len;
    unsigned char buf[512];
    snprintf(path, sizeof(path), "%s/rsa.pub", dir);
    char *pem = slurp_file(path, &len);
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *rsa = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
    BIO_free(b);
    free(pem);
    BIGNUM *bn = NULL, *be = NULL;
    ck_assert(EVP_PKEY_get_bn_param(rsa, OSSL_PKEY_PARAM_RSA_N, &bn));
    ck_assert(EVP_PKEY_get_bn_param(rsa, OSSL_PKEY_PARAM_RSA_E, &be));
    int nl = BN_bn2bin(bn, buf);
    b64url(buf, (size_t)nl, n);
    nl = BN_bn2bin(be, buf);
    b64url(buf, (size_t)nl, e);
    BN_free(bn);
    BN_free(be);
    EVP_PKEY_free(rsa);

    snprintf(path, sizeof(path), "%s/ec.pub", dir);
    pem = slurp_file(path, &len);
    b = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *ec = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
    BIO_free(b);
    free(pem);
    size_t plen = 0;
    ck_assert(
        EVP_PKEY_get_octet_string_param(ec, OSSL_PKEY_PARAM_PUB_KEY, buf, sizeof(buf), &plen));
    ck_assert_uint_eq(plen, 65);
    b64url(buf + 1, 32, x);
    b64url(buf + 33, 32, y);
    EVP_PKEY_free(ec);

    snprintf(path, sizeof(path), "%s/ed.pub", dir);
    pem = slurp_file(path, &len);
    b = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *ed = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
    BIO_free(b);
    free(pem);
    plen = sizeof(buf);
    ck_assert(EVP_PKEY_get_raw_public_key(ed, buf, &plen));
    b64url(buf, plen, ox);
    EVP_PKEY_free(ed);
    b64url((const unsigned char *)SECRET, strlen(SECRET), k);

    char *doc = malloc(8192);
    snprintf(
        doc, 8192,
        "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r1\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"%s\","
        "\"e\":\"%s\"},"
        "{\"kty\":\"EC\",\"kid\":\"e1\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"},"
        "{\"kty\":\"OKP\",\"kid\":\"o1\",\"crv\":\"Ed25519\",\"x\":\"%s\"},"
        "{\"kty\":\"oct\",\"kid\":\"h1\",\"k\":\"%s\"},"
        "{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
        n, e, x, y, ox, k);
    return doc;
}

START_TEST(jwks_every_family)
{
    int64_t now = time(NULL);
    char *doc = jwks_of_all(), err[256];
    struct jwt_keys *ks = jwt_keys_new();
    ck_assert_msg(jwt_keys_add_jwks(ks, doc, strlen(doc), err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(jwt_keys_count(ks), 4); /* the "enc" key is skipped */
    const char *pl = payload_at(now + 60, now);
    struct {
        const char *alg, *key, *kid;
    } cases[] = {{"RS256", "rsa.pem", "r1"},
                 {"ES256", "ec.pem", "e1"},
                 {"EdDSA", "ed.pem", "o1"},
                 {"HS256", SECRET, "h1"}};
    for (size_t i = 0; i < CHECK_NELEMS(cases); i++) {
        char hdr[128];
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"kid\":\"%s\"}", cases[i].alg, cases[i].kid);
        char *tok = make_token(cases[i].alg, cases[i].key, hdr, pl);
        ck_assert_msg(verify(ks, tok, 0) == JWT_OK, "%s", cases[i].alg);
        free(tok);
        /* without a kid: every key of the family is tried */
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\"}", cases[i].alg);
        tok = make_token(cases[i].alg, cases[i].key, hdr, pl);
        ck_assert_msg(verify(ks, tok, 0) == JWT_OK, "%s without kid", cases[i].alg);
        free(tok);
    }
    /* a kid naming a key of another family, or no key */
    char *tok = make_token("RS256", "rsa.pem", "{\"alg\":\"RS256\",\"kid\":\"e1\"}", pl);
    ck_assert_int_eq(verify(ks, tok, 0), JWT_E_NO_KEY);
    free(tok);
    tok = make_token("RS256", "rsa.pem", "{\"alg\":\"RS256\",\"kid\":\"zz\"}", pl);
    ck_assert_int_eq(verify(ks, tok, 0), JWT_E_NO_KEY);
    free(tok);
    jwt_keys_free(ks);
    free(doc);
}
END_TEST

START_TEST(bad_keys_refused)
{
    char err[256];
    struct {
        const char *doc, *says;
    } cases[] = {
        {"{\"keys\":[{\"kty\":\"XYZ\",\"kid\":\"k\"}]}", "kty XYZ"},
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-521\",\"x\":\"AA\",\"y\":\"AA\"}]}", "EC"},
        {"{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2hvcnQ\"}]}", "at least 32"},
        {"{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}", "bits"},
        {"{\"keys\":[{\"kty\":\"oct\",\"alg\":\"RS256\",\"k\":\"c2hvcnQ\"}]}", "alg RS256"},
        {"{\"keys\":{}}", "JWKS"},
        {"[]", "JWKS"},
        {"not json", "JWKS"},
        {"{\"keys\":[42]}", "keys[0]"},
    };
    for (size_t i = 0; i < CHECK_NELEMS(cases); i++) {
        struct jwt_keys *ks = jwt_keys_new();
        err[0] = '\0';
        ck_assert_msg(jwt_keys_add_jwks(ks, cases[i].doc, strlen(cases[i].doc), err, sizeof(err)) ==
                          -1,
                      "case %zu", i);
        ck_assert_msg(strstr(err, cases[i].says) != NULL, "case %zu: %s", i, err);
        jwt_keys_free(ks);
    }
    struct jwt_keys *ks = jwt_keys_new();
    char path[256];
    size_t len;
    snprintf(path, sizeof(path), "%s/rsa1k.pub", dir);
    char *pem = slurp_file(path, &len);
    ck_assert_int_eq(jwt_keys_add_pem(ks, pem, len, NULL, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "1024 bits"));
    free(pem);
    snprintf(path, sizeof(path), "%s/ec384.pub", dir);
    pem = slurp_file(path, &len);
    ck_assert_int_eq(jwt_keys_add_pem(ks, pem, len, NULL, err, sizeof(err)), -1);
    free(pem);
    ck_assert_int_eq(jwt_keys_add_pem(ks, "junk", 4, NULL, err, sizeof(err)), -1);
    ck_assert_int_eq(jwt_keys_add_secret(ks, "short", 5, NULL, err, sizeof(err)), -1);
    ck_assert_uint_eq(jwt_keys_count(ks), 0);
    jwt_keys_free(ks);
}
END_TEST

int main(void)
{
    make_keys();
    Suite *s = suite_create("jwt");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, base64url_strict);
    tcase_add_test(tc, each_algorithm_verifies);
    tcase_add_test(tc, wrong_key_of_the_family);
    tcase_add_test(tc, alg_none_refused);
    tcase_add_test(tc, algorithm_confusion_refused);
    tcase_add_test(tc, exp_nbf_leeway);
    tcase_add_test(tc, exp_nbf_boundaries);
    tcase_add_test(tc, key_without_kid_verifies_a_token_with_one);
    tcase_add_test(tc, issuer_audience);
    tcase_add_test(tc, claims_as_text);
    tcase_add_test(tc, malformed_tokens);
    tcase_add_test(tc, jwks_every_family);
    tcase_add_test(tc, bad_keys_refused);
    suite_add_tcase(s, tc);
    int rc = check_run(s);
    remove_keys();
    return rc;
}
