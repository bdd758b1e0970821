/*
 * Unit tests for auth: keys files (plain and sha256: keys, names, bad
 * lines reported FILE:LINE), the constant-time comparison, API keys from a
 * header or the query (hide_credentials), JWT bearer tokens through a
 * policy (identity, claims to headers, the cache: a hot token is verified
 * once), the challenges of 401 and the 403 of allow; the password-check
 * pool awaited in a coroutine, watching the client's stream.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <crypt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <errno.h>
#include <event2/event.h>
#include <sys/socket.h>

#include "auth.h"
#include "auth_pool.h"
#include "check_helpers.h"
#include "coro.h"
#include "io.h"
#include "loop.h"
#include "http1.h"
#include "jwt.h"

static char dir[64];
static char errors[4096];

static void collect(void *arg, const char *key, const char *msg)
{
    (void)arg;
    size_t n = strlen(errors);
    snprintf(errors + n, sizeof(errors) - n, "%s: %s\n", key, msg);
}

static char *file_with(const char *name, const char *text)
{
    static char path[8][256];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, 256, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    ck_assert(f != NULL);
    fputs(text, f);
    fclose(f);
    return p;
}

/* A parsed request from raw head text (kept in static storage). */
static struct http1_request *parse(const char *head)
{
    static struct http1_header hdrs[32];
    static struct http1_request req;
    static char buf[16384];
    snprintf(buf, sizeof(buf), "%s", head);
    struct http1_limits lim = {.max_header_bytes = sizeof(buf), .max_headers = 32};
    http1_request_init(&req, hdrs, 32);
    ck_assert_msg(http1_parse_request(buf, strlen(buf), &lim, &req) > 0, "unparsed: %s", head);
    return &req;
}

static const char *field(const struct auth_out *o, const char *name)
{
    for (size_t i = 0; i < o->nset; i++)
        if (strcasecmp(o->set[i].name, name) == 0)
            return o->set[i].value;
    return NULL;
}

static bool removed(const struct auth_out *o, const char *name)
{
    for (size_t i = 0; i < o->nremove; i++)
        if (strcasecmp(o->remove[i].name, name) == 0)
            return true;
    return false;
}

static const char *KEYS =
    "# keys of the test\n"
    "\n"
    "s3cret-key-of-alice alice\n"
    "  sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b "
    "bob\n" /* sha256("secret") */
    "unnamed-key-0001\r\n";

static struct auth_policy *keys_policy(struct auth_config *ac)
{
    ac->method = AUTH_API_KEYS;
    ac->keys_file = file_with("keys", KEYS);
    ac->realm = "test";
    errors[0] = '\0';
    struct auth_policy *p = auth_policy_new(ac, collect, NULL);
    ck_assert_msg(p != NULL, "%s", errors);
    return p;
}

START_TEST(constant_time_equal)
{
    unsigned char a[32], b[32];
    memset(a, 7, sizeof(a));
    memcpy(b, a, sizeof(b));
    ck_assert(auth_equal(a, b, 32));
    for (int i = 0; i < 32; i++) {
        b[i] ^= 1;
        ck_assert(!auth_equal(a, b, 32));
        b[i] ^= 1;
    }
    ck_assert(auth_equal(a, b, 0));
}
END_TEST

START_TEST(api_key_header)
{
    struct auth_config ac = {.key_header = "X-Api-Key", .identity_header = "X-Consumer"};
    struct auth_policy *p = keys_policy(&ac);
    struct auth_out o = {0};
    struct {
        const char *head;
        int status;
        const char *identity;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: h\r\nX-Api-Key: s3cret-key-of-alice\r\n\r\n", 0, "alice"},
        {"GET / HTTP/1.1\r\nHost: h\r\nx-api-key: secret\r\n\r\n", 0, "bob"},
        {"GET / HTTP/1.1\r\nHost: h\r\nX-Api-Key: unnamed-key-0001\r\n\r\n", 0, "key-"},
        {"GET / HTTP/1.1\r\nHost: h\r\nX-Api-Key: s3cret-key-of-alicE\r\n\r\n", 401, NULL},
        {"GET / HTTP/1.1\r\nHost: h\r\nX-Api-Key: \r\n\r\n", 401, NULL},
        {"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 401, NULL},
        {"GET /?api_key=secret HTTP/1.1\r\nHost: h\r\n\r\n", 401, NULL}, /* no query configured */
        {"GET / HTTP/1.1\r\nHost: h\r\nX-Api-Key: secret\r\nX-Api-Key: secret\r\n\r\n", 401, NULL},
        /* the digest itself is not a key */
        {"GET / HTTP/1.1\r\nHost: h\r\nX-Api-Key: "
         "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\r\n\r\n",
         401, NULL},
    };
    for (size_t i = 0; i < CHECK_NELEMS(cases); i++) {
        int rc = auth_check(p, parse(cases[i].head), 0, &o);
        ck_assert_msg(rc == cases[i].status, "case %zu: %d", i, rc);
        if (rc == 0) {
            ck_assert_ptr_nonnull(o.identity);
            ck_assert_msg(strncmp(o.identity, cases[i].identity, strlen(cases[i].identity)) == 0,
                          "case %zu: %s", i, o.identity);
            ck_assert_str_eq(field(&o, "X-Consumer"), o.identity);
            ck_assert(!removed(&o, "X-Api-Key")); /* hide_credentials is off */
        } else {
            ck_assert_ptr_null(o.identity);
            ck_assert_str_eq(o.challenge, "Key realm=\"test\"");
            ck_assert_ptr_nonnull(o.why);
        }
    }
    auth_out_fini(&o);
    auth_policy_free(p);
}
END_TEST

START_TEST(api_key_query_hidden)
{
    struct auth_config ac = {.key_query = "api_key", .hide_credentials = true};
    struct auth_policy *p = keys_policy(&ac);
    struct auth_out o = {0};
    ck_assert_int_eq(auth_check(p,
                                parse("GET /x?a=1&api_key=s3cret%2Dkey-of-alice&b=2 HTTP/1.1\r\n"
                                      "Host: h\r\n\r\n"),
                                0, &o),
                     0);
    ck_assert_str_eq(o.identity, "alice");
    ck_assert(o.query_rewritten);
    ck_assert_uint_eq(o.query_len, 7);
    ck_assert(memcmp(o.query, "a=1&b=2", 7) == 0);
    ck_assert_int_eq(
        auth_check(p, parse("GET /x?api_key=secret HTTP/1.1\r\nHost: h\r\n\r\n"), 0, &o), 0);
    ck_assert_str_eq(o.identity, "bob");
    ck_assert(o.query_rewritten && o.query == NULL);
    /* repeated, malformed escapes, absent */
    ck_assert_int_eq(auth_check(p,
                                parse("GET /x?api_key=secret&api_key=secret HTTP/1.1\r\n"
                                      "Host: h\r\n\r\n"),
                                0, &o),
                     401);
    ck_assert_int_eq(
        auth_check(p, parse("GET /x?api_key=secre%7 HTTP/1.1\r\nHost: h\r\n\r\n"), 0, &o), 401);
    ck_assert_int_eq(auth_check(p, parse("GET /x?api_key=%00 HTTP/1.1\r\nHost: h\r\n\r\n"), 0, &o),
                     401);
    ck_assert_int_eq(
        auth_check(p, parse("GET /x?my_api_key=secret HTTP/1.1\r\nHost: h\r\n\r\n"), 0, &o), 401);
    auth_out_fini(&o);
    auth_policy_free(p);
}
END_TEST

START_TEST(allow_list_403)
{
    const char *allow[] = {"bob"};
    struct auth_config ac = {.key_header = "X-Api-Key", .allow = allow, .nallow = 1};
    struct auth_policy *p = keys_policy(&ac);
    struct auth_out o = {0};
    ck_assert_int_eq(
        auth_check(p, parse("GET / HTTP/1.1\r\nHost: h\r\nX-Api-Key: secret\r\n\r\n"), 0, &o), 0);
    ck_assert_int_eq(
        auth_check(p, parse("GET / HTTP/1.1\r\nHost: h\r\nX-Api-Key: s3cret-key-of-alice\r\n\r\n"),
                   0, &o),
        403);
    ck_assert_str_eq(o.identity, "alice"); /* logged */
    auth_out_fini(&o);
    auth_policy_free(p);
}
END_TEST

START_TEST(keys_file_bad_lines)
{
    struct auth_config ac = {.method = AUTH_API_KEYS, .key_header = "K", .realm = "r"};
    ac.keys_file =
        file_with("bad", "good-key one\n"
                         "two fields too many\n"
                         "sha256:abcd short\n"
                         "sha256:zz80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\n"
                         "key bad/name\n"
                         "good-key again\n");
    errors[0] = '\0';
    ck_assert_ptr_null(auth_policy_new(&ac, collect, NULL));
    char want[512];
    for (int line = 2; line <= 6; line++) {
        snprintf(want, sizeof(want), "keys_file: %s:%d: ", ac.keys_file, line);
        ck_assert_msg(strstr(errors, want) != NULL, "line %d not reported:\n%s", line, errors);
    }
    ck_assert_ptr_null(strstr(errors, ":1: "));
    ck_assert_ptr_nonnull(strstr(errors, "the same key as line 1"));
    /* no key at all, and a missing file */
    ac.keys_file = file_with("empty", "# nothing\n\n");
    errors[0] = '\0';
    ck_assert_ptr_null(auth_policy_new(&ac, collect, NULL));
    ck_assert_ptr_nonnull(strstr(errors, "holds no key"));
    ac.keys_file = "/nonexistent/keys";
    errors[0] = '\0';
    ck_assert_ptr_null(auth_policy_new(&ac, collect, NULL));
    ck_assert_ptr_nonnull(strstr(errors, "cannot open"));
}
END_TEST

/* ---- JWT through a policy: HS256 tokens made here (HMAC of OpenSSL; the
 * openssl command makes them in test_jwt) ---- */

static const char SECRET[] = "a-test-secret-of-more-than-32-bytes!";

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

static char *hs256(const char *payload)
{
    static char tok[4096];
    const char *hdr = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    b64url((const unsigned char *)hdr, strlen(hdr), tok);
    strcat(tok, ".");
    b64url((const unsigned char *)payload, strlen(payload), tok + strlen(tok));
    unsigned char mac[32];
    unsigned mlen = 0;
    HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)tok, strlen(tok), mac,
         &mlen);
    strcat(tok, ".");
    b64url(mac, mlen, tok + strlen(tok));
    return tok;
}

static const char *bearer(const char *tok)
{
    static char head[16384];
    snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer %s\r\n\r\n",
             tok);
    return head;
}

static struct auth_policy *jwt_policy(struct auth_config *ac)
{
    ac->method = AUTH_JWT;
    ac->secret_file = file_with("secret", SECRET);
    ac->realm = "api";
    ac->identity_claim = "sub";
    ac->leeway_ms = 60000;
    ac->identity_header = "X-User";
    ac->claims[0] = (struct auth_claim_header){"email", "X-Email"};
    ac->claims[1] = (struct auth_claim_header){"tenant", "X-Tenant"};
    ac->nclaims = 2;
    errors[0] = '\0';
    struct auth_policy *p = auth_policy_new(ac, collect, NULL);
    ck_assert_msg(p != NULL, "%s", errors);
    return p;
}

START_TEST(jwt_identity_claims_cache)
{
    struct auth_config ac = {.cache_size = 16};
    struct auth_policy *p = jwt_policy(&ac);
    struct auth_out o = {0};
    int64_t now = time(NULL);
    char pl[256];
    snprintf(pl, sizeof(pl), "{\"sub\":\"carol\",\"email\":\"c@example.com\",\"exp\":%lld}",
             (long long)(now + 600));
    const char *head = bearer(hs256(pl));
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(auth_check(p, parse(head), now, &o), 0);
        ck_assert_str_eq(o.identity, "carol");
        ck_assert_str_eq(field(&o, "X-User"), "carol");
        ck_assert_str_eq(field(&o, "X-Email"), "c@example.com");
        ck_assert(removed(&o, "X-Tenant")); /* absent claim: a client's field is removed */
        ck_assert_ptr_null(field(&o, "X-Tenant"));
    }
    ck_assert_uint_eq(auth_jwt_verifications(p), 1); /* the hot token was verified once */
    /* the cached token still expires, at exp + leeway as a verified one (RFC 7519: valid
     * while now < exp) */
    ck_assert_int_eq(auth_check(p, parse(head), now + 600 + 59, &o), 0);
    ck_assert_uint_eq(auth_jwt_verifications(p), 1);
    ck_assert_int_eq(auth_check(p, parse(head), now + 600 + 60, &o), 401);
    ck_assert_int_eq(auth_check(p, parse(head), now + 600 + 61, &o), 401);
    ck_assert_str_eq(o.challenge, "Bearer realm=\"api\", error=\"invalid_token\"");
    auth_out_fini(&o);
    auth_policy_free(p);
}
END_TEST

START_TEST(jwt_challenges)
{
    struct auth_config ac = {.cache_size = 0};
    struct auth_policy *p = jwt_policy(&ac);
    struct auth_out o = {0};
    int64_t now = time(NULL);
    char pl[256];
    ck_assert_int_eq(auth_check(p, parse("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), now, &o), 401);
    ck_assert_str_eq(o.challenge, "Bearer realm=\"api\"");
    ck_assert_int_eq(
        auth_check(p, parse("GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic YTpi\r\n\r\n"), now,
                   &o),
        401);
    ck_assert_str_eq(o.challenge, "Bearer realm=\"api\"");
    ck_assert_int_eq(auth_check(p, parse(bearer("not.a.token")), now, &o), 401);
    ck_assert_str_eq(o.challenge, "Bearer realm=\"api\", error=\"invalid_token\"");
    snprintf(pl, sizeof(pl), "{\"email\":\"x\",\"exp\":%lld}", (long long)(now + 600));
    ck_assert_int_eq(auth_check(p, parse(bearer(hs256(pl))), now, &o), 401); /* no sub */
    snprintf(pl, sizeof(pl), "{\"sub\":\"a\\r\\nX-Admin: 1\"}");
    ck_assert_int_eq(auth_check(p, parse(bearer(hs256(pl))), now, &o), 401); /* no header */
    static char huge[JWT_MAX_TOKEN + 100];
    memset(huge, 'A', sizeof(huge) - 1);
    ck_assert_int_eq(auth_check(p, parse(bearer(huge)), now, &o), 401);
    char two[1024];
    snprintf(two, sizeof(two),
             "GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer a.b.c\r\n"
             "Authorization: Bearer a.b.c\r\n\r\n");
    ck_assert_int_eq(auth_check(p, parse(two), now, &o), 401);
    ck_assert_str_eq(o.challenge, "Bearer realm=\"api\", error=\"invalid_request\"");
    ck_assert_uint_eq(auth_jwt_verifications(p), 3);
    auth_out_fini(&o);
    auth_policy_free(p);
}
END_TEST

START_TEST(jwt_bad_key_files)
{
    struct auth_config ac = {.method = AUTH_JWT, .realm = "r", .identity_claim = "sub"};
    ac.jwks_file = file_with("jwks", "{\"keys\":[{\"kty\":\"XYZ\",\"kid\":\"k9\"}]}");
    errors[0] = '\0';
    ck_assert_ptr_null(auth_policy_new(&ac, collect, NULL));
    ck_assert_msg(strstr(errors, "jwks_file: ") && strstr(errors, "keys[0] (kid k9): kty XYZ"),
                  "%s", errors);
    ac.jwks_file = NULL;
    ac.secret_file = file_with("short", "too-short\n");
    errors[0] = '\0';
    ck_assert_ptr_null(auth_policy_new(&ac, collect, NULL));
    ck_assert_ptr_nonnull(strstr(errors, "secret_file: "));
    ac.secret_file = NULL;
    ac.public_key_file = file_with("pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n");
    errors[0] = '\0';
    ck_assert_ptr_null(auth_policy_new(&ac, collect, NULL));
    ck_assert_ptr_nonnull(strstr(errors, "public_key_file: "));
}
END_TEST

/* ---- basic: the users file and the cache (the pool is test_auth.py's) ---- */

static const char *basic(const char *user_pass)
{
    static char head[1024];
    unsigned char enc[512];
    EVP_EncodeBlock(enc, (const unsigned char *)user_pass, (int)strlen(user_pass));
    snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic %s\r\n\r\n",
             enc);
    return head;
}

START_TEST(basic_users_and_cache)
{
    char users[1024];
    const char *h = crypt("pw-of-dave", crypt_gensalt("$2b$", 4, NULL, 0));
    ck_assert_ptr_nonnull(h);
    snprintf(users, sizeof(users), "# users\ndave:%s\neve:%s\n", h,
             crypt("pw-of-eve", crypt_gensalt("$6$", 0, NULL, 0)));
    struct auth_config ac = {.method = AUTH_BASIC,
                             .realm = "r",
                             .users_file = file_with("users", users),
                             .cache_size = 8,
                             .cache_ttl_ms = 60000,
                             .identity_header = "X-User"};
    errors[0] = '\0';
    struct auth_policy *p = auth_policy_new(&ac, collect, NULL);
    ck_assert_msg(p != NULL, "%s", errors);
    struct auth_out o = {0};
    ck_assert_int_eq(auth_check(p, parse("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), 100, &o), 401);
    ck_assert_str_eq(o.challenge, "Basic realm=\"r\", charset=\"UTF-8\"");
    /* a known user: the hash is handed out to check */
    ck_assert_int_eq(auth_check(p, parse(basic("dave:pw-of-dave")), 100, &o), AUTH_PENDING);
    ck_assert_str_eq(o.user, "dave");
    ck_assert_str_eq(o.hash, h);
    ck_assert_str_eq(o.password, "pw-of-dave");
    ck_assert_int_eq(auth_basic_done(p, true, 100, &o), 0);
    ck_assert_str_eq(o.identity, "dave");
    ck_assert_str_eq(field(&o, "X-User"), "dave");
    /* now cached: no hash to check, until the TTL */
    ck_assert_int_eq(auth_check(p, parse(basic("dave:pw-of-dave")), 150, &o), 0);
    ck_assert_str_eq(o.identity, "dave");
    ck_assert_int_eq(auth_check(p, parse(basic("dave:pw-of-dave")), 161, &o), AUTH_PENDING);
    /* a wrong password is not cached */
    ck_assert_int_eq(auth_check(p, parse(basic("dave:wrong")), 100, &o), AUTH_PENDING);
    ck_assert_int_eq(auth_basic_done(p, false, 100, &o), 401);
    ck_assert_int_eq(auth_check(p, parse(basic("dave:wrong")), 100, &o), AUTH_PENDING);
    /* an unknown user is checked against a decoy and fails whatever it says */
    ck_assert_int_eq(auth_check(p, parse(basic("mallory:x")), 100, &o), AUTH_PENDING);
    ck_assert_ptr_null(o.user);
    ck_assert_ptr_nonnull(o.hash);
    ck_assert_int_eq(auth_basic_done(p, true, 100, &o), 401);
    /* malformed */
    ck_assert_int_eq(auth_check(p, parse(basic("no-colon")), 100, &o), 401);
    ck_assert_int_eq(
        auth_check(p, parse("GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic !!!\r\n\r\n"), 100,
                   &o),
        401);
    auth_out_fini(&o);
    auth_policy_free(p);
}
END_TEST

START_TEST(users_file_bad_lines)
{
    struct auth_config ac = {.method = AUTH_BASIC, .realm = "r"};
    ac.users_file = file_with("badusers", "ok:$6$abcdefgh$KQeXafAQAaOoKTevphVU215RvJdgzyfASRasIOuh1"
                                          "2hO8u0r1bGW92ZnTmC9IjsiQ8VPiTXBiZF49dFL1U4wX/\n"
                                          "no-colon-here\n"
                                          "md5:$1$abcdefgh$aaaaaaaaaaaaaaaaaaaaaa\n"
                                          "plain:secret\n"
                                          "ok:$6$abcdefgh$KQeXafAQAaOoKTevphVU215RvJdgzyfASRasIOuh1"
                                          "2hO8u0r1bGW92ZnTmC9IjsiQ8VPiTXBiZF49dFL1U4wX/\n");
    errors[0] = '\0';
    ck_assert_ptr_null(auth_policy_new(&ac, collect, NULL));
    char want[512];
    for (int line = 2; line <= 5; line++) {
        snprintf(want, sizeof(want), "users_file: %s:%d: ", ac.users_file, line);
        ck_assert_msg(strstr(errors, want) != NULL, "line %d not reported:\n%s", line, errors);
    }
    ck_assert_ptr_nonnull(strstr(errors, "legacy"));
    ck_assert_ptr_nonnull(strstr(errors, "user ok again (line 1)"));
}
END_TEST

/* One auth_pool_verify in a coroutine, watching the stream on fds[0] of a
 * socketpair whose other end the test closes after close_ms (-1: never). */
struct pool_run {
    struct loop *loop;
    const char *hash, *password;
    struct io_stream *watch;
    int peer;
    int rc;
    bool ok;
    double ms;
};

static void pool_run_fn(void *arg)
{
    struct pool_run *pr = arg;
    int64_t t0 = loop_now();
    pr->rc = auth_pool_verify(pr->loop, pr->hash, pr->password, pr->watch, t0 + 20000 * LOOP_MS,
                              &pr->ok);
    pr->ms = (double)(loop_now() - t0) / LOOP_MS;
    loop_stop(pr->loop);
}

static void pool_close_peer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pool_run *pr = arg;
    close(pr->peer);
    pr->peer = -1;
}

static void pool_run(struct pool_run *pr, const char *hash, const char *password, int close_ms)
{
    struct loop *loop = loop_new(CORO_STACK_DEFAULT, 4);
    ck_assert_ptr_nonnull(loop);
    int fds[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds), 0);
    *pr = (struct pool_run){.loop = loop, .hash = hash, .password = password, .peer = fds[1]};
    pr->watch = io_stream_from_fd(loop, fds[0], 64);
    ck_assert_ptr_nonnull(pr->watch);
    if (close_ms >= 0) {
        struct timeval tv = {0, close_ms * 1000};
        ck_assert_int_eq(event_base_once(loop_base(loop), -1, EV_TIMEOUT, pool_close_peer, pr, &tv),
                         0);
    }
    ck_assert_int_eq(loop_spawn(loop, pool_run_fn, pr, NULL), 0);
    loop_run(loop);
    ck_assert_uint_eq(loop_live(loop), 0);
    io_stream_free(pr->watch);
    if (pr->peer >= 0)
        close(pr->peer);
    loop_free(loop);
}

START_TEST(basic_pool_watches_the_client)
{
    static char quick[128], slow[128];
    snprintf(quick, sizeof(quick), "%s", crypt("pw", crypt_gensalt("$2b$", 4, NULL, 0)));
    /* cost 14: a check of about a second (0.7 s on an idle 2020 core) */
    snprintf(slow, sizeof(slow), "%s", crypt("pw", crypt_gensalt("$2b$", 14, NULL, 0)));
    struct pool_run pr;
    /* the client stays: the verdict, either way */
    pool_run(&pr, quick, "pw", -1);
    ck_assert_int_eq(pr.rc, 0);
    ck_assert(pr.ok);
    pool_run(&pr, quick, "wrong", -1);
    ck_assert_int_eq(pr.rc, 0);
    ck_assert(!pr.ok);
    /* the client closes 50 ms into a long check: the wait ends then */
    pool_run(&pr, slow, "pw", 50);
    ck_assert_int_eq(pr.rc, -ECONNABORTED);
    ck_assert_msg(pr.ms < 400, "left %.0f ms into the check, its client gone at 50 ms", pr.ms);
}
END_TEST

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/ferry-auth-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("test_auth: mkdtemp");
        return 1;
    }
    Suite *s = suite_create("auth");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, constant_time_equal);
    tcase_add_test(tc, api_key_header);
    tcase_add_test(tc, api_key_query_hidden);
    tcase_add_test(tc, allow_list_403);
    tcase_add_test(tc, keys_file_bad_lines);
    tcase_add_test(tc, jwt_identity_claims_cache);
    tcase_add_test(tc, jwt_challenges);
    tcase_add_test(tc, jwt_bad_key_files);
    tcase_add_test(tc, basic_users_and_cache);
    tcase_add_test(tc, users_file_bad_lines);
    tcase_add_test(tc, basic_pool_watches_the_client);
    suite_add_tcase(s, tc);
    int rc = check_run(s);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        rc = 1;
    return rc;
}
