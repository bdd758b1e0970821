/*
 * libFuzzer target for JWT verification (jwt_verify) and JWKS documents
 * (jwt_keys_add_jwks): bytes from an Authorization header or a key file an
 * operator was sent. The first byte chooses: odd, the rest is a JWKS
 * document; even, a token checked against an HS256 secret and an Ed25519
 * key. Asserts that a verdict is one of jwt.h's, that a token is returned
 * exactly when it is valid, and that its claims read without fault.
 */
// sources: src/jwt.c
// libs: -lcrypto -ljansson
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The key set of every token input: the secret of the seed corpus and an
 * Ed25519 public key (RFC 8037's example). */
static struct jwt_keys *keys(void)
{
    static struct jwt_keys *ks;
    static const char secret[] = "fuzz-secret-of-at-least-thirty-two-bytes";
    static const char jwks[] = "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"ed\","
                               "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}]}";
    char err[256];
    if (!ks) {
        ks = jwt_keys_new();
        CHECK(ks);
        CHECK(jwt_keys_add_secret(ks, secret, strlen(secret), "hs", err, sizeof(err)) == 0);
        CHECK(jwt_keys_add_jwks(ks, jwks, strlen(jwks), err, sizeof(err)) == 0);
    }
    return ks;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *rest = (const char *)data + 1;
    size_t len = size - 1;
    char err[256];
    if (data[0] & 1) {
        struct jwt_keys *ks = jwt_keys_new();
        CHECK(ks);
        int rc = jwt_keys_add_jwks(ks, rest, len, err, sizeof(err));
        CHECK(rc == 0 || rc == -1);
        CHECK(rc == 0 || strlen(err) < sizeof(err));
        CHECK(jwt_keys_count(ks) <= JWT_MAX_KEYS);
        jwt_keys_free(ks);
        return 0;
    }
    const char *auds[] = {"api"};
    struct jwt_policy p = {.keys = keys(),
                           .algs = JWT_ALGS_ALL,
                           .audiences = data[0] & 2 ? auds : NULL,
                           .naudiences = data[0] & 2 ? 1 : 0,
                           .leeway = 60};
    struct jwt_token *t = NULL;
    int rc = jwt_verify(&p, rest, len, 1700000000, &t);
    CHECK(rc <= 0 && rc >= JWT_E_NOMEM);
    CHECK((rc == JWT_OK) == (t != NULL));
    CHECK(jwt_strerror(rc) != NULL);
    if (t) {
        char buf[64];
        int n = jwt_claim_text(t, "sub", buf, sizeof(buf));
        CHECK(n < (int)sizeof(buf));
        CHECK(n < 0 || strlen(buf) == (size_t)n);
        int64_t exp;
        (void)jwt_token_exp(t, &exp);
        jwt_token_free(t);
    }
    return 0;
}
