/* auth: see auth.h. */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "jwt.h"

/* One API key: the digest of the key and who it is. */
struct api_key {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    char *name;
    unsigned line;
};

/* One user of a users file. */
struct basic_user {
    char *name;
    char *hash; /* a crypt(3) string: $2b$ bcrypt, $5$/$6$ SHA-crypt, $y$ yescrypt */
    unsigned line;
};

/* A verified token's results, by the digest of the token. */
struct cached_token {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    bool used;
    int64_t expires; /* wall-clock seconds, the first no longer valid; INT64_MAX: no exp */
    char *vals;      /* identity, then each claim: NUL-terminated, one after another */
    int16_t len[1 + AUTH_MAX_CLAIMS]; /* -1: the claim is absent */
};

struct auth_policy {
    struct auth_config c;
    struct api_key *keys; /* sorted by digest */
    size_t nkeys;
    struct jwt_keys *jwks;
    struct jwt_policy jp;
    struct basic_user *users; /* sorted by name */
    size_t nusers;
    struct cached_token *cache;
    size_t ncache; /* a power of two */
    pthread_mutex_t cache_lock;
    char *challenge;             /* no credential */
    char *challenge_invalid;     /* a bad one */
    char *challenge_request;     /* a malformed request (two credentials) */
    unsigned long verifications; /* atomic */
    EVP_MD *sha256;              /* fetched once: SHA256() fetches per call */
};

unsigned long auth_jwt_verifications(const struct auth_policy *p)
{
    return __atomic_load_n(&p->verifications, __ATOMIC_RELAXED);
}

/* SHA-256 of data with the policy's fetched digest. */
static void digest_of(const struct auth_policy *p, const void *data, size_t len, unsigned char *out)
{
    if (!p->sha256 || !EVP_Digest(data, len, out, NULL, p->sha256, NULL))
        SHA256(data, len, out);
}

bool auth_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

/* ---- loading ------------------------------------------------------------------------ */

/* Reads a whole file (NUL-terminated, caller frees). NULL after err. */
static char *read_file(const char *path, size_t *len, const char *key, auth_err_fn *err, void *arg)
{
    char msg[512];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        (uint64_t)st.st_size > AUTH_MAX_FILE) {
        if (fd >= 0 && !S_ISREG(st.st_mode))
            snprintf(msg, sizeof(msg), "%s: not a regular file", path);
        else if (fd >= 0)
            snprintf(msg, sizeof(msg), "%s: larger than %u MiB", path, AUTH_MAX_FILE >> 20);
        else
            snprintf(msg, sizeof(msg), "%s: cannot open: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        err(arg, key, msg);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (!buf || got != (size_t)st.st_size) {
        snprintf(msg, sizeof(msg), "%s: cannot read", path);
        err(arg, key, msg);
        free(buf);
        return NULL;
    }
    buf[got] = '\0';
    *len = got;
    return buf;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("-_.@:+", c) != NULL;
}

static int cmp_key(const void *a, const void *b)
{
    return memcmp(((const struct api_key *)a)->digest, ((const struct api_key *)b)->digest,
                  SHA256_DIGEST_LENGTH);
}

/*
 * One line of a keys file: "KEY [NAME]", KEY plain (printable ASCII, no
 * space) or "sha256:" and 64 hex digits. Returns NULL, or why it is bad.
 */
static const char *parse_key_line(char *line, struct api_key *k)
{
    char *f[3], *save = NULL;
    int nf = 0;
    for (char *p = strtok_r(line, " \t", &save); p; p = strtok_r(NULL, " \t", &save)) {
        if (nf == 3)
            break;
        f[nf++] = p;
    }
    if (nf > 2)
        return "expected KEY [NAME] (a key, then an optional identity name)";
    for (const char *p = f[0]; *p; p++)
        if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
            return "a key is printable ASCII without spaces";
    if (strncmp(f[0], "sha256:", 7) == 0) {
        const char *h = f[0] + 7;
        if (strlen(h) != 64)
            return "sha256: wants 64 hex digits (the SHA-256 of the key)";
        for (int i = 0; i < 32; i++) {
            int hi = hexval(h[2 * i]), lo = hexval(h[2 * i + 1]);
            if (hi < 0 || lo < 0)
                return "sha256: wants 64 hex digits (the SHA-256 of the key)";
            k->digest[i] = (unsigned char)(hi << 4 | lo);
        }
    } else {
        SHA256((const unsigned char *)f[0], strlen(f[0]), k->digest);
    }
    if (nf == 2) {
        size_t len = strlen(f[1]);
        if (len > AUTH_MAX_NAME)
            return "a name is at most 64 characters";
        for (size_t i = 0; i < len; i++)
            if (!name_char(f[1][i]))
                return "a name is letters, digits and - _ . @ : +";
        k->name = strdup(f[1]);
    } else {
        /* no name: "key-" and the first 8 hex digits of the digest */
        char n[16];
        snprintf(n, sizeof(n), "key-%02x%02x%02x%02x", k->digest[0], k->digest[1], k->digest[2],
                 k->digest[3]);
        k->name = strdup(n);
    }
    return k->name ? NULL : "out of memory";
}

/* The keys file into p->keys, sorted. 0, or -1 after reporting. */
static int load_keys(struct auth_policy *p, auth_err_fn *err, void *arg)
{
    size_t len;
    char *text = read_file(p->c.keys_file, &len, "keys_file", err, arg);
    if (!text)
        return -1;
    size_t cap = 1;
    for (size_t i = 0; i < len; i++)
        cap += text[i] == '\n';
    p->keys = calloc(cap, sizeof(*p->keys));
    int bad = 0;
    if (!p->keys) {
        err(arg, "keys_file", "out of memory");
        free(text);
        return -1;
    }
    unsigned lineno = 0;
    char msg[600];
    for (char *line = text, *next; p->keys && line && line < text + len; line = next) {
        lineno++;
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        size_t l = strlen(line);
        if (l && line[l - 1] == '\r')
            line[--l] = '\0';
        char *s = line + strspn(line, " \t");
        if (!*s || *s == '#')
            continue;
        struct api_key *k = &p->keys[p->nkeys];
        const char *why = parse_key_line(s, k);
        if (why) {
            snprintf(msg, sizeof(msg), "%s:%u: %s", p->c.keys_file, lineno, why);
            err(arg, "keys_file", msg);
            bad++;
            continue;
        }
        k->line = lineno;
        p->nkeys++;
    }
    free(text);
    if (!bad && p->nkeys == 0) {
        snprintf(msg, sizeof(msg), "%s: holds no key", p->c.keys_file);
        err(arg, "keys_file", msg);
        bad++;
    }
    if (!p->keys)
        return -1;
    qsort(p->keys, p->nkeys, sizeof(*p->keys), cmp_key);
    for (size_t i = 1; i < p->nkeys; i++) {
        if (memcmp(p->keys[i].digest, p->keys[i - 1].digest, SHA256_DIGEST_LENGTH) == 0) {
            unsigned a = p->keys[i - 1].line, b = p->keys[i].line;
            snprintf(msg, sizeof(msg), "%s:%u: the same key as line %u", p->c.keys_file,
                     a > b ? a : b, a > b ? b : a);
            err(arg, "keys_file", msg);
            bad++;
        }
    }
    return bad ? -1 : 0;
}

/* The cache of verified credentials: cache_size slots, a power of two. */
static int make_cache(struct auth_policy *p, auth_err_fn *err, void *arg)
{
    size_t n = 1;
    while (n < p->c.cache_size)
        n <<= 1;
    p->ncache = p->c.cache_size ? n : 0;
    if (p->ncache && !(p->cache = calloc(p->ncache, sizeof(*p->cache)))) {
        err(arg, "cache_size", "out of memory");
        return -1;
    }
    return 0;
}

static int cmp_user(const void *a, const void *b)
{
    return strcmp(((const struct basic_user *)a)->name, ((const struct basic_user *)b)->name);
}

/* One line of a users file, "USER:HASH". NULL, or why it is bad. */
static const char *parse_user_line(char *line, struct basic_user *u)
{
    char *colon = strchr(line, ':');
    if (!colon)
        return "expected USER:HASH (a crypt(3) hash: bcrypt, SHA-crypt, yescrypt)";
    *colon = '\0';
    char *hash = colon + 1;
    size_t hl = strlen(hash);
    while (hl && (hash[hl - 1] == ' ' || hash[hl - 1] == '\t'))
        hash[--hl] = '\0';
    if (!*line || strlen(line) > AUTH_MAX_NAME)
        return "a user name is 1 to 64 characters";
    for (const char *c = line; *c; c++)
        if (!name_char(*c) || *c == ':')
            return "a user name is letters, digits and - _ . @ +";
    switch (crypt_checksalt(hash)) {
    case CRYPT_SALT_OK:
        break;
    case CRYPT_SALT_METHOD_LEGACY:
        return "a legacy hash (DES, MD5, ...): use bcrypt ($2b$), SHA-crypt ($5$, $6$) or "
               "yescrypt ($y$)";
    default:
        return "not a crypt(3) hash this system supports (bcrypt $2b$, SHA-crypt $5$ $6$, "
               "yescrypt $y$)";
    }
    if (hash[0] != '$')
        return "not a crypt(3) hash this system supports (bcrypt $2b$, SHA-crypt $5$ $6$, "
               "yescrypt $y$)";
    u->name = strdup(line);
    u->hash = strdup(hash);
    return u->name && u->hash ? NULL : "out of memory";
}

/* The users file into p->users, sorted. 0, or -1 after reporting. */
static int load_users(struct auth_policy *p, auth_err_fn *err, void *arg)
{
    size_t len;
    char *text = read_file(p->c.users_file, &len, "users_file", err, arg);
    if (!text)
        return -1;
    size_t cap = 1;
    for (size_t i = 0; i < len; i++)
        cap += text[i] == '\n';
    p->users = calloc(cap, sizeof(*p->users));
    if (!p->users) {
        err(arg, "users_file", "out of memory");
        free(text);
        return -1;
    }
    int bad = 0;
    unsigned lineno = 0;
    char msg[600];
    for (char *line = text, *next; line && line < text + len; line = next) {
        lineno++;
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        size_t l = strlen(line);
        if (l && line[l - 1] == '\r')
            line[--l] = '\0';
        char *s = line + strspn(line, " \t");
        if (!*s || *s == '#')
            continue;
        struct basic_user *u = &p->users[p->nusers];
        const char *why = parse_user_line(s, u);
        if (why) {
            free(u->name);
            free(u->hash);
            memset(u, 0, sizeof(*u));
            snprintf(msg, sizeof(msg), "%s:%u: %s", p->c.users_file, lineno, why);
            err(arg, "users_file", msg);
            bad++;
            continue;
        }
        u->line = lineno;
        p->nusers++;
    }
    OPENSSL_cleanse(text, len);
    free(text);
    if (!bad && p->nusers == 0) {
        snprintf(msg, sizeof(msg), "%s: holds no user", p->c.users_file);
        err(arg, "users_file", msg);
        bad++;
    }
    qsort(p->users, p->nusers, sizeof(*p->users), cmp_user);
    for (size_t i = 1; i < p->nusers; i++) {
        if (strcmp(p->users[i].name, p->users[i - 1].name) == 0) {
            unsigned a = p->users[i - 1].line, b = p->users[i].line;
            snprintf(msg, sizeof(msg), "%s:%u: user %s again (line %u)", p->c.users_file,
                     a > b ? a : b, p->users[i].name, a > b ? b : a);
            err(arg, "users_file", msg);
            bad++;
        }
    }
    if (bad)
        return -1;
    return make_cache(p, err, arg);
}

/* The JWT key set from whichever files are named. 0 or -1. */
static int load_jwt(struct auth_policy *p, auth_err_fn *err, void *arg)
{
    char why[300], msg[700];
    p->jwks = jwt_keys_new();
    if (!p->jwks) {
        err(arg, "jwt", "out of memory");
        return -1;
    }
    const struct {
        const char *key, *path;
    } files[] = {{"jwks_file", p->c.jwks_file},
                 {"public_key_file", p->c.public_key_file},
                 {"secret_file", p->c.secret_file}};
    int bad = 0;
    for (size_t i = 0; i < 3; i++) {
        if (!files[i].path)
            continue;
        size_t len;
        char *text = read_file(files[i].path, &len, files[i].key, err, arg);
        if (!text) {
            bad++;
            continue;
        }
        int rc;
        if (i == 0) {
            rc = jwt_keys_add_jwks(p->jwks, text, len, why, sizeof(why));
        } else if (i == 1) {
            rc = jwt_keys_add_pem(p->jwks, text, len, NULL, why, sizeof(why));
        } else {
            while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
                len--;
            rc = jwt_keys_add_secret(p->jwks, text, len, NULL, why, sizeof(why));
        }
        OPENSSL_cleanse(text, len); /* a JWKS may hold HMAC secrets too */
        free(text);
        if (rc < 0) {
            snprintf(msg, sizeof(msg), "%s: %s", files[i].path, why);
            err(arg, files[i].key, msg);
            bad++;
        }
    }
    if (bad)
        return -1;
    if (jwt_keys_count(p->jwks) == 0) {
        err(arg, "jwks_file", "no signing key loaded");
        return -1;
    }
    p->jp = (struct jwt_policy){
        .keys = p->jwks,
        .algs = p->c.algorithms ? p->c.algorithms : JWT_ALGS_ALL,
        .issuer = p->c.issuer,
        .audiences = p->c.audiences,
        .naudiences = p->c.naudiences,
        .leeway = p->c.leeway_ms / 1000,
    };
    return make_cache(p, err, arg);
}

static char *challenge(const struct auth_policy *p, const char *error)
{
    const char *scheme = p->c.method == AUTH_JWT ? "Bearer" : "Key";
    if (p->c.method == AUTH_BASIC) {
        char *s = NULL;
        return asprintf(&s, "Basic realm=\"%s\", charset=\"UTF-8\"", p->c.realm) < 0 ? NULL : s;
    }
    char *s = NULL;
    int n = error ? asprintf(&s, "%s realm=\"%s\", error=\"%s\"", scheme, p->c.realm, error)
                  : asprintf(&s, "%s realm=\"%s\"", scheme, p->c.realm);
    return n < 0 ? NULL : s;
}

struct auth_policy *auth_policy_new(const struct auth_config *ac, auth_err_fn *err, void *arg)
{
    struct auth_policy *p = calloc(1, sizeof(*p));
    if (!p) {
        err(arg, "auth", "out of memory");
        return NULL;
    }
    p->c = *ac;
    p->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    pthread_mutex_init(&p->cache_lock, NULL);
    int rc = ac->method == AUTH_API_KEYS ? load_keys(p, err, arg)
             : ac->method == AUTH_BASIC  ? load_users(p, err, arg)
                                         : load_jwt(p, err, arg);
    if (rc == 0) {
        p->challenge = challenge(p, NULL);
        p->challenge_invalid = challenge(p, p->c.method == AUTH_JWT ? "invalid_token" : NULL);
        p->challenge_request = challenge(p, p->c.method == AUTH_JWT ? "invalid_request" : NULL);
        if (!p->challenge || !p->challenge_invalid || !p->challenge_request) {
            err(arg, "auth", "out of memory");
            rc = -1;
        }
    }
    if (rc < 0) {
        auth_policy_free(p);
        return NULL;
    }
    return p;
}

void auth_policy_free(struct auth_policy *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->nkeys; i++)
        free(p->keys[i].name);
    free(p->keys);
    for (size_t i = 0; i < p->nusers; i++) {
        free(p->users[i].name);
        free(p->users[i].hash);
    }
    free(p->users);
    jwt_keys_free(p->jwks);
    for (size_t i = 0; i < p->ncache; i++)
        free(p->cache[i].vals);
    free(p->cache);
    pthread_mutex_destroy(&p->cache_lock);
    EVP_MD_free(p->sha256);
    free(p->challenge);
    free(p->challenge_invalid);
    free(p->challenge_request);
    free(p);
}

/* ---- checking ----------------------------------------------------------------------- */

/* The one field named name: 1 and *v, 0 when absent, 2 when repeated. */
static int one_field(const struct http1_request *req, const char *name,
                     const struct http1_header **v)
{
    size_t len = strlen(name);
    int n = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct http1_header *h = &req->headers[i];
        if (h->name_len == len && strncasecmp(h->name, name, len) == 0) {
            *v = h;
            if (++n > 1)
                return 2;
        }
    }
    return n;
}

/* Appends s[0..len) and a NUL to out->buf (room was reserved). */
static const char *put(struct auth_out *out, size_t *used, const char *s, size_t len)
{
    char *d = out->buf + *used;
    memcpy(d, s, len);
    d[len] = '\0';
    *used += len + 1;
    return d;
}

static void set_field(struct auth_out *out, const char *name, const char *value)
{
    out->set[out->nset++] = (struct http1_header){name, strlen(name), value, strlen(value)};
}

static void remove_field(struct auth_out *out, const char *name)
{
    out->remove[out->nremove++] = (struct http1_header){name, strlen(name), NULL, 0};
}

static bool allowed(const struct auth_policy *p, const char *identity)
{
    if (!p->c.nallow)
        return true;
    for (size_t i = 0; i < p->c.nallow; i++)
        if (strcmp(p->c.allow[i], identity) == 0)
            return true;
    return false;
}

/* Percent-decodes s[0..len) into d; -1 on a bad escape or a NUL. */
static long pct_decode(const char *s, size_t len, char *d)
{
    long n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            if (len - i < 3)
                return -1;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (c == '\0')
            return -1;
        d[n++] = c;
    }
    return n;
}

/*
 * The API key in the query: 1 with its raw value, 0 when absent, 2 when
 * repeated. With hide, the query without it is written to out.
 */
static int query_key(const struct auth_policy *p, const struct http1_request *req,
                     struct auth_out *out, size_t *used, const char **val, size_t *vlen)
{
    const char *q = req->query, *end = q ? q + req->query_len : NULL;
    size_t nlen = strlen(p->c.key_query);
    int found = 0;
    char *rest = out->buf + *used;
    size_t rlen = 0;
    for (const char *s = q; s && s < end;) {
        const char *amp = memchr(s, '&', (size_t)(end - s));
        const char *e = amp ? amp : end;
        if ((size_t)(e - s) > nlen && s[nlen] == '=' && memcmp(s, p->c.key_query, nlen) == 0) {
            found++;
            *val = s + nlen + 1;
            *vlen = (size_t)(e - s) - nlen - 1;
        } else if (e > s) {
            if (rlen)
                rest[rlen++] = '&';
            memcpy(rest + rlen, s, (size_t)(e - s));
            rlen += (size_t)(e - s);
        }
        s = e + 1;
    }
    if (found == 1 && p->c.hide_credentials) {
        out->query_rewritten = true;
        out->query = rlen ? rest : NULL;
        out->query_len = rlen;
        *used += rlen + 1;
    }
    return found > 1 ? 2 : found;
}

static int fail(const struct auth_policy *p, struct auth_out *out, const char *challenge,
                const char *why)
{
    (void)p;
    out->challenge = challenge;
    out->why = why;
    return 401;
}

static int check_api_key(const struct auth_policy *p, const struct http1_request *req,
                         struct auth_out *out, size_t *used)
{
    const char *val = NULL;
    size_t vlen = 0;
    const struct http1_header *h = NULL;
    int n = p->c.key_header ? one_field(req, p->c.key_header, &h) : 0;
    if (n == 2)
        return fail(p, out, p->challenge_request, "auth: API key header repeated");
    if (n == 1) {
        val = h->value;
        vlen = h->value_len;
        if (p->c.hide_credentials)
            remove_field(out, p->c.key_header);
    } else if (p->c.key_query) {
        n = query_key(p, req, out, used, &val, &vlen);
        if (n == 2)
            return fail(p, out, p->challenge_request, "auth: API key parameter repeated");
        if (n == 1) {
            long d = pct_decode(val, vlen, out->buf + *used);
            if (d <= 0)
                return fail(p, out, p->challenge_invalid, "auth: API key parameter malformed");
            val = out->buf + *used;
            vlen = (size_t)d;
        }
    }
    if (!val)
        return fail(p, out, p->challenge, "auth: no API key");
    struct api_key probe;
    digest_of(p, val, vlen, probe.digest);
    const struct api_key *k = bsearch(&probe, p->keys, p->nkeys, sizeof(*p->keys), cmp_key);
    if (!k || !auth_equal(k->digest, probe.digest, sizeof(probe.digest)))
        return fail(p, out, p->challenge_invalid, "auth: unknown API key");
    out->identity = put(out, used, k->name, strlen(k->name));
    return 0;
}

/* The cached results of the token with digest d at now, into out. */
static bool cache_get(const struct auth_policy *p, const unsigned char *d, int64_t now,
                      struct auth_out *out, size_t *used, int16_t *lens)
{
    if (!p->ncache)
        return false;
    struct auth_policy *mp = (struct auth_policy *)p; /* the cache is the mutable part */
    struct cached_token *e =
        &mp->cache[(d[0] | (size_t)d[1] << 8 | (size_t)d[2] << 16) & (p->ncache - 1)];
    bool hit = false;
    pthread_mutex_lock(&mp->cache_lock);
    if (e->used && memcmp(e->digest, d, SHA256_DIGEST_LENGTH) == 0 && now < e->expires) {
        size_t total = 0;
        for (size_t i = 0; i <= p->c.nclaims; i++) {
            lens[i] = e->len[i];
            total += e->len[i] >= 0 ? (size_t)e->len[i] + 1 : 0;
        }
        memcpy(out->buf + *used, e->vals, total);
        hit = true;
    }
    pthread_mutex_unlock(&mp->cache_lock);
    return hit;
}

static void cache_put(const struct auth_policy *p, const unsigned char *d, int64_t expires,
                      const char *vals, size_t total, const int16_t *lens)
{
    if (!p->ncache)
        return;
    char *copy = malloc(total ? total : 1);
    if (!copy)
        return;
    memcpy(copy, vals, total);
    struct auth_policy *mp = (struct auth_policy *)p;
    struct cached_token *e =
        &mp->cache[(d[0] | (size_t)d[1] << 8 | (size_t)d[2] << 16) & (p->ncache - 1)];
    pthread_mutex_lock(&mp->cache_lock);
    char *old = e->vals;
    memcpy(e->digest, d, SHA256_DIGEST_LENGTH);
    e->used = true;
    e->expires = expires;
    e->vals = copy;
    memcpy(e->len, lens, sizeof(e->len));
    pthread_mutex_unlock(&mp->cache_lock);
    free(old);
}

/* Verifies tok and writes identity and claims at out->buf + *used (lens:
 * their lengths, -1 absent). 0 or 401. */
static int verify_token(const struct auth_policy *p, const char *tok, size_t len, int64_t now,
                        const unsigned char *digest, struct auth_out *out, size_t *used,
                        int16_t *lens)
{
    struct jwt_token *t;
    __atomic_add_fetch(&((struct auth_policy *)p)->verifications, 1, __ATOMIC_RELAXED);
    int rc = jwt_verify(&p->jp, tok, len, now, &t);
    if (rc == JWT_E_NOMEM) {
        out->why = "auth: out of memory";
        return 503;
    }
    if (rc != JWT_OK)
        return fail(p, out, p->challenge_invalid, jwt_strerror(rc));
    char *base = out->buf + *used, *at = base;
    int n = jwt_claim_text(t, p->c.identity_claim, at, AUTH_MAX_VALUE);
    if (n <= 0) {
        jwt_token_free(t);
        return fail(p, out, p->challenge_invalid, "auth: token has no usable identity claim");
    }
    lens[0] = (int16_t)n;
    at += n + 1;
    for (size_t i = 0; i < p->c.nclaims; i++) {
        n = jwt_claim_text(t, p->c.claims[i].claim, at, AUTH_MAX_VALUE);
        lens[i + 1] = (int16_t)(n >= 0 ? n : -1);
        at += n >= 0 ? (size_t)n + 1 : 0;
    }
    int64_t exp;
    if (!jwt_token_exp(t, &exp))
        exp = INT64_MAX;
    else if (exp < INT64_MAX - p->jp.leeway)
        exp += p->jp.leeway;
    jwt_token_free(t);
    cache_put(p, digest, exp, base, (size_t)(at - base), lens);
    return 0;
}

static int check_jwt(const struct auth_policy *p, const struct http1_request *req, int64_t now,
                     struct auth_out *out, size_t *used)
{
    const struct http1_header *h = NULL;
    int n = one_field(req, "Authorization", &h);
    if (n == 2)
        return fail(p, out, p->challenge_request, "auth: Authorization repeated");
    if (n == 0 || h->value_len < 7 || strncasecmp(h->value, "Bearer ", 7) != 0)
        return fail(p, out, p->challenge, "auth: no bearer token");
    const char *tok = h->value + 7;
    size_t len = h->value_len - 7;
    while (len && *tok == ' ') {
        tok++;
        len--;
    }
    if (len == 0 || len > JWT_MAX_TOKEN)
        return fail(p, out, p->challenge_invalid, "auth: malformed token");
    if (p->c.hide_credentials)
        remove_field(out, "Authorization");
    unsigned char digest[SHA256_DIGEST_LENGTH];
    digest_of(p, tok, len, digest);
    int16_t lens[1 + AUTH_MAX_CLAIMS];
    if (!cache_get(p, digest, now, out, used, lens)) {
        int rc = verify_token(p, tok, len, now, digest, out, used, lens);
        if (rc)
            return rc;
    }
    const char *at = out->buf + *used;
    out->identity = at;
    at += lens[0] + 1;
    for (size_t i = 0; i < p->c.nclaims; i++) {
        if (lens[i + 1] < 0) {
            remove_field(out, p->c.claims[i].header);
            continue;
        }
        set_field(out, p->c.claims[i].header, at);
        at += lens[i + 1] + 1;
    }
    *used = (size_t)(at - out->buf);
    return 0;
}

static int finish(const struct auth_policy *p, struct auth_out *out);

/* Standard base64 (RFC 4648 §4), padding optional; -1 when bad. */
static long b64_decode(const char *s, size_t len, unsigned char *d)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    while (len && s[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -1;
    unsigned long acc = 0;
    int bits = 0;
    long n = 0;
    for (size_t i = 0; i < len; i++) {
        const char *at = s[i] ? strchr(alphabet, s[i]) : NULL;
        if (!at)
            return -1;
        acc = (acc << 6) | (unsigned long)(at - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            d[n++] = (unsigned char)(acc >> bits);
            acc &= (1ul << bits) - 1;
        }
    }
    return n;
}

/* The cached user of credentials with digest d at now, into out. */
static bool cache_user(const struct auth_policy *p, const unsigned char *d, int64_t now,
                       struct auth_out *out, size_t *used)
{
    int16_t lens[1 + AUTH_MAX_CLAIMS];
    if (!cache_get(p, d, now, out, used, lens))
        return false;
    out->identity = out->buf + *used;
    *used += (size_t)lens[0] + 1;
    return true;
}

/*
 * Basic credentials: from the cache, else AUTH_PENDING with the hash to
 * check. An unknown user is checked against a decoy hash (the first
 * user's) so that the answer takes as long as for a known one.
 */
static int check_basic(const struct auth_policy *p, const struct http1_request *req, int64_t now,
                       struct auth_out *out, size_t *used)
{
    const struct http1_header *h = NULL;
    int n = one_field(req, "Authorization", &h);
    if (n == 2)
        return fail(p, out, p->challenge, "auth: Authorization repeated");
    if (n == 0 || h->value_len < 6 || strncasecmp(h->value, "Basic ", 6) != 0)
        return fail(p, out, p->challenge, "auth: no basic credentials");
    const char *b = h->value + 6;
    size_t len = h->value_len - 6;
    while (len && *b == ' ') {
        b++;
        len--;
    }
    if (len == 0 || len > AUTH_MAX_BASIC)
        return fail(p, out, p->challenge, "auth: malformed basic credentials");
    if (p->c.hide_credentials)
        remove_field(out, "Authorization");
    digest_of(p, b, len, out->cred_digest);
    if (cache_user(p, out->cred_digest, now, out, used))
        return 0;
    char *cred = out->buf + *used;
    long dl = b64_decode(b, len, (unsigned char *)cred);
    char *colon = dl > 0 ? memchr(cred, ':', (size_t)dl) : NULL;
    if (!colon || memchr(cred, '\0', (size_t)dl))
        return fail(p, out, p->challenge, "auth: malformed basic credentials");
    cred[dl] = '\0';
    *colon = '\0';
    *used += (size_t)dl + 1;
    struct basic_user key = {.name = cred};
    const struct basic_user *u = bsearch(&key, p->users, p->nusers, sizeof(*p->users), cmp_user);
    out->user = u ? u->name : NULL;
    out->hash = u ? u->hash : p->users[0].hash;
    out->password = colon + 1;
    return AUTH_PENDING;
}

int auth_basic_done(const struct auth_policy *p, bool ok, int64_t now, struct auth_out *out)
{
    if (out->password) /* in out->buf: not kept for the next request to find */
        explicit_bzero((char *)out->password, strlen(out->password));
    if (!ok || !out->user)
        return fail(p, out, p->challenge, "auth: bad user or password");
    int16_t lens[1 + AUTH_MAX_CLAIMS] = {(int16_t)strlen(out->user)};
    int64_t ttl = p->c.cache_ttl_ms / 1000;
    if (ttl > 0)
        cache_put(p, out->cred_digest, now + ttl, out->user, strlen(out->user) + 1, lens);
    out->identity = out->user;
    return finish(p, out);
}

int auth_check(const struct auth_policy *p, const struct http1_request *req, int64_t now,
               struct auth_out *out)
{
    out->identity = out->challenge = out->why = NULL;
    out->nset = out->nremove = 0;
    out->query_rewritten = false;
    out->query = NULL;
    out->query_len = 0;
    out->hash = out->password = out->user = NULL;
    /* room for the identity, every claim, a decoded key and a rewritten
     * query, or basic credentials */
    size_t need = (AUTH_MAX_VALUE + 1) * (1 + AUTH_MAX_CLAIMS) + 2 * req->query_len + 64 +
                  (p->c.method == AUTH_BASIC ? AUTH_MAX_BASIC : 0);
    if (out->cap < need) {
        char *b = realloc(out->buf, need);
        if (!b) {
            out->why = "auth: out of memory";
            return 503;
        }
        out->buf = b;
        out->cap = need;
    }
    size_t used = 0;
    int rc = p->c.method == AUTH_API_KEYS ? check_api_key(p, req, out, &used)
             : p->c.method == AUTH_BASIC  ? check_basic(p, req, now, out, &used)
                                          : check_jwt(p, req, now, out, &used);
    if (rc)
        return rc;
    return finish(p, out);
}

/* An identity was found: its field upstream, then allow. 0 or 403. */
static int finish(const struct auth_policy *p, struct auth_out *out)
{
    if (p->c.identity_header)
        set_field(out, p->c.identity_header, out->identity);
    if (!allowed(p, out->identity)) {
        out->why = "auth: identity not allowed on the route";
        return 403;
    }
    return 0;
}

void auth_out_fini(struct auth_out *out)
{
    free(out->buf);
    out->buf = NULL;
    out->cap = 0;
}
