/*
 * tls: see tls.h for the contract, docs/tls.md for the configuration.
 *
 * OpenSSL runs over the stream's socket (a socket BIO on io's fd): io's
 * reads call SSL_read_ex straight into the input evbuffer's reserved
 * space, its writes SSL_write_ex from the output evbuffer's chains, so
 * plaintext is never copied but for small chains, which are gathered into
 * one record (a 16 KiB per-thread buffer) instead of a record and a
 * write(2) each. read_ahead lets one read(2) take several records; the
 * transport's pending() tells io about records already read. Buffers are
 * released while a connection is idle (SSL_MODE_RELEASE_BUFFERS).
 *
 * Decisions:
 * - Renegotiation is off, so after the handshake a read never needs to
 *   write and a write never needs to read (io still handles both).
 * - Session tickets only (no per-worker session cache that another worker
 *   could not see); their keys are process-wide, so any worker resumes a
 *   session, and survive a reload. A session resumes for at most
 *   TLS_SESSION_LIFETIME_S from its full handshake, whose time every
 *   ticket of it carries (on_ticket_new, on_ticket_open).
 * - ALPN: http/1.1 when the client offers it; a client offering only
 *   other protocols gets the no_application_protocol alert (RFC 7301).
 * - The unexpected EOF of a client that does not send close_notify is a
 *   plain EOF (SSL_OP_IGNORE_UNEXPECTED_EOF), as with most servers; an
 *   upstream's is an error, so a close-delimited body is never taken
 *   whole without close_notify.
 */
#include "tls.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "io.h"
#include "proxyproto.h"

/* Mozilla's "intermediate" configuration (TLS 1.2 ciphers; TLS 1.3's are
 * OpenSSL's defaults, all of them good). */
#define TLS_INTERMEDIATE_CIPHERS                                                                   \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"       \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
#define TLS_GROUPS "X25519:prime256v1:secp384r1"
#define TLS_MAX_CERTS 64
#define TLS_EXPIRY_WARN_DAYS 14
#define TLS_TICKET_ROTATE_S 3600
/* A ticket is decrypted for at least one rotation after it was made (then
 * under the previous key): its lifetime hint, the session's, promises no more. */
_Static_assert(TLS_SESSION_LIFETIME_S <= TLS_TICKET_ROTATE_S, "tickets would outlive their key");
/* Small chains are gathered into one record up to this size. */
#define TLS_RECORD 16384

/* ---- counters and failure strings ---------------------------------------------------- */

static struct tls_stats stats;
#define STAT_ADD(f) __atomic_add_fetch(&stats.f, 1, __ATOMIC_RELAXED)

void tls_stats_get(struct tls_stats *out)
{
    out->handshakes = __atomic_load_n(&stats.handshakes, __ATOMIC_RELAXED);
    out->resumed = __atomic_load_n(&stats.resumed, __ATOMIC_RELAXED);
    out->failed = __atomic_load_n(&stats.failed, __ATOMIC_RELAXED);
    out->plaintext = __atomic_load_n(&stats.plaintext, __ATOMIC_RELAXED);
}

/*
 * "prefix: reason" as a string that lives as long as the process, made
 * once per pair: OpenSSL's reasons are a finite set of static strings, so
 * the table stays small (past its cap the prefix alone is returned).
 */
#define INTERN_CAP 256
static struct {
    pthread_mutex_t mu;
    const char *prefix[INTERN_CAP], *reason[INTERN_CAP];
    char *text[INTERN_CAP];
    unsigned n;
} interned = {.mu = PTHREAD_MUTEX_INITIALIZER};

static const char *intern(const char *prefix, const char *reason)
{
    if (!reason)
        return prefix;
    const char *out = prefix;
    pthread_mutex_lock(&interned.mu);
    unsigned i = 0;
    while (i < interned.n && !(interned.prefix[i] == prefix && interned.reason[i] == reason))
        i++;
    if (i < interned.n) {
        out = interned.text[i];
    } else if (i < INTERN_CAP) {
        size_t len = strlen(prefix) + 2 + strlen(reason) + 1;
        char *t = malloc(len);
        if (t) {
            snprintf(t, len, "%s: %s", prefix, reason);
            interned.prefix[i] = prefix;
            interned.reason[i] = reason;
            interned.text[i] = t;
            interned.n++;
            out = t;
        }
    }
    pthread_mutex_unlock(&interned.mu);
    return out;
}

/* ---- session ticket keys: process-wide, rotated ---------------------------------------- */

struct ticket_key {
    unsigned char name[16], aes[32], hmac[32];
};

static struct {
    pthread_mutex_t mu;
    bool ready, have_prev;
    struct ticket_key cur, prev;
    time_t rotate_at; /* CLOCK_MONOTONIC seconds */
} tickets = {.mu = PTHREAD_MUTEX_INITIALIZER};

static time_t mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static int ticket_key_new(struct ticket_key *k)
{
    return RAND_bytes(k->name, sizeof(k->name)) == 1 && RAND_bytes(k->aes, sizeof(k->aes)) == 1 &&
                   RAND_bytes(k->hmac, sizeof(k->hmac)) == 1
               ? 0
               : -1;
}

/* The keys in force (rotating them when due) into cur and prev. Returns
 * false when no key could be made. */
static bool ticket_keys(struct ticket_key *cur, struct ticket_key *prev, bool *have_prev)
{
    bool ok = true;
    pthread_mutex_lock(&tickets.mu);
    time_t now = mono_s();
    if (!tickets.ready) {
        ok = ticket_key_new(&tickets.cur) == 0;
        tickets.ready = ok;
        tickets.rotate_at = now + TLS_TICKET_ROTATE_S;
    } else if (now >= tickets.rotate_at) {
        struct ticket_key k;
        if (ticket_key_new(&k) == 0) {
            tickets.prev = tickets.cur;
            tickets.have_prev = true;
            tickets.cur = k;
        }
        tickets.rotate_at = now + TLS_TICKET_ROTATE_S;
    }
    *cur = tickets.cur;
    *prev = tickets.prev;
    *have_prev = tickets.have_prev;
    pthread_mutex_unlock(&tickets.mu);
    return ok;
}

/*
 * A ticket's IV: 16 bytes of a per-thread batch taken from RAND_bytes 512
 * bytes at a time. Each RAND_bytes call costs ~6,000 instructions whatever
 * its length (the DRBG's locking and state update), paid once per ticket
 * before. IVs are sent in the clear; they need only be unpredictable before
 * use, which bytes in the thread's memory are. No fork follows the workers'
 * start, so no two processes share a batch.
 */
#define TICKET_IV_BATCH 32
static __thread unsigned char iv_batch[TICKET_IV_BATCH * 16];
static __thread unsigned iv_left;

static int ticket_iv(unsigned char iv[16])
{
    if (iv_left == 0) {
        if (RAND_bytes(iv_batch, sizeof(iv_batch)) != 1)
            return -1;
        iv_left = TICKET_IV_BATCH;
    }
    iv_left--;
    memcpy(iv, iv_batch + iv_left * 16, 16);
    return 0;
}

/* The tickets' cipher, fetched once (tls_config_load): EVP_aes_256_cbc()
 * would look it up by name in OpenSSL's provider store at every ticket. */
static EVP_CIPHER *ticket_cipher;

static int ticket_init(const struct ticket_key *k, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                       EVP_MAC_CTX *hctx, int enc)
{
    OSSL_PARAM params[3];
    params[0] =
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof(k->hmac));
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    const EVP_CIPHER *cipher = ticket_cipher ? ticket_cipher : EVP_aes_256_cbc();
    if (EVP_CipherInit_ex(cctx, cipher, NULL, k->aes, iv, enc) != 1 ||
        EVP_MAC_CTX_set_params(hctx, params) != 1)
        return -1;
    return 0;
}

/*
 * OpenSSL's ticket callback: encrypt with the current key; decrypt with
 * the current (1) or the previous one (2: the client gets a new ticket).
 * TLS 1.3 asks for a new ticket (2) after every resumption: a client uses
 * a ticket once (RFC 8446, C.4), and without a fresh one its next
 * connection would be a full handshake, as OpenSSL's own keys (nginx)
 * and HAProxy send one.
 */
static int on_ticket_key(SSL *ssl, unsigned char key_name[16], unsigned char iv[16],
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    struct ticket_key cur, prev;
    bool have_prev;
    int r = 0;
    if (!ticket_keys(&cur, &prev, &have_prev))
        return -1;
    if (enc) {
        memcpy(key_name, cur.name, 16);
        r = ticket_iv(iv) == 0 && ticket_init(&cur, iv, cctx, hctx, 1) == 0 ? 1 : -1;
    } else if (memcmp(key_name, cur.name, 16) == 0) {
        r = ticket_init(&cur, iv, cctx, hctx, 0) == 0 ? (SSL_version(ssl) == TLS1_3_VERSION ? 2 : 1)
                                                      : -1;
    } else if (have_prev && memcmp(key_name, prev.name, 16) == 0) {
        r = ticket_init(&prev, iv, cctx, hctx, 0) == 0 ? 2 : -1;
    }
    OPENSSL_cleanse(&cur, sizeof(cur));
    OPENSSL_cleanse(&prev, sizeof(prev));
    return r;
}

/*
 * A session's birth: the time of its full handshake, in every ticket made
 * for it (the ticket's application data: 8 bytes, big-endian Unix
 * seconds), so the bound holds however many resumptions renewed it.
 * OpenSSL 3.0 stamps a TLS 1.3 session with the time of each new ticket,
 * also one sent after a resumption (tls_construct_new_session_ticket), and
 * its age check would restart at every resumption; a TLS 1.2 session
 * keeps the time of its full handshake, and OpenSSL refuses it past
 * SSL_CTX_set_timeout, the same TLS_SESSION_LIFETIME_S.
 */
int64_t tls_session_left(int64_t born, int64_t now)
{
    if (now < born || (uint64_t)now - (uint64_t)born >= TLS_SESSION_LIFETIME_S)
        return 0;
    return TLS_SESSION_LIFETIME_S - (now - born);
}

/* A ticket's birth: the 8 bytes of its application data. */
static bool ticket_birth(SSL_SESSION *sess, int64_t *born)
{
    void *data;
    size_t len = 0;
    if (SSL_SESSION_get0_ticket_appdata(sess, &data, &len) != 1 || len != 8)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | ((const unsigned char *)data)[i];
    *born = (int64_t)v;
    return true;
}

/* OpenSSL's callback before a ticket is encrypted: a session without a
 * birth is a full handshake's, born now; a resumed one keeps its own
 * (OpenSSL copies the application data into the renewed session, a copy
 * of its own) and its ticket's lifetime hint (the session's timeout) is
 * what is left of it. */
static int on_ticket_new(SSL *ssl, void *arg)
{
    (void)arg;
    SSL_SESSION *sess = SSL_get0_session(ssl);
    if (!sess)
        return 1;
    int64_t born;
    if (ticket_birth(sess, &born)) {
        SSL_SESSION_set_timeout(sess, (long)tls_session_left(born, (int64_t)time(NULL)));
        return 1;
    }
    uint64_t now = (uint64_t)time(NULL);
    unsigned char stamp[8];
    for (int i = 7; i >= 0; i--, now >>= 8)
        stamp[i] = now & 0xff;
    /* Without it (out of memory) the ticket is made but never resumes. */
    SSL_SESSION_set1_ticket_appdata(sess, stamp, sizeof(stamp));
    return 1;
}

struct tls_server;
static bool ticket_same_certificates(SSL *ssl, SSL_SESSION *sess, const struct tls_server *srv);

/* OpenSSL's callback after a ticket was decrypted (arg: the listener's
 * tls_server): a session past its lifetime, or without a birth, or made
 * under a name served by other certificates, is not resumed; the client
 * gets a full handshake and a ticket of a new session. Other outcomes as
 * OpenSSL's default (no ticket, an empty one or one not ours: a new
 * ticket). */
static SSL_TICKET_RETURN on_ticket_open(SSL *ssl, SSL_SESSION *sess, const unsigned char *key_name,
                                        size_t key_name_len, SSL_TICKET_STATUS status, void *arg)
{
    (void)key_name, (void)key_name_len;
    if (status != SSL_TICKET_SUCCESS && status != SSL_TICKET_SUCCESS_RENEW)
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    int64_t born;
    if (!ticket_birth(sess, &born) || tls_session_left(born, (int64_t)time(NULL)) == 0)
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    if (arg && !ticket_same_certificates(ssl, sess, arg))
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    return status == SSL_TICKET_SUCCESS ? SSL_TICKET_RETURN_USE : SSL_TICKET_RETURN_USE_RENEW;
}

/* ---- reporting problems of a config's files ------------------------------------------ */

struct loader {
    const struct config *cfg;
    FILE *diag;
    unsigned errors;
    unsigned warnings;
};

__attribute__((format(printf, 4, 5))) static void
report(struct loader *ld, bool warning, const struct config_file *at, const char *fmt, ...)
{
    if (!warning)
        ld->errors++;
    else
        ld->warnings++;
    if (!ld->diag)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(ld->diag, "%s:%u:%u: %s: %s%s\n", ld->cfg->path ? ld->cfg->path : "config", at->line,
            at->col, at->key, warning ? "warning: " : "", msg);
}

/* OpenSSL's last error, for a message ("no start line", "bad decrypt"). */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "not a valid PEM file";
}

/* Opens a file named by the config, or reports why it cannot be read. */
static BIO *open_file(struct loader *ld, const struct config_file *f, const char *what)
{
    BIO *b = BIO_new_file(f->path, "r");
    if (!b)
        report(ld, false, f, "cannot read %s %s: %s", what, f->path, strerror(errno));
    return b;
}

/* ---- certificates ----------------------------------------------------------------------- */

struct cert {
    X509 *x509;
    STACK_OF(X509) * chain;
    EVP_PKEY *key;
    int type; /* EVP_PKEY_RSA, EVP_PKEY_EC, ... */
    char **names;
    size_t nnames;
    unsigned char *ocsp;
    size_t ocsp_len;
    time_t not_after;
};

static void cert_fini(struct cert *c)
{
    X509_free(c->x509);
    sk_X509_pop_free(c->chain, X509_free);
    EVP_PKEY_free(c->key);
    for (size_t i = 0; i < c->nnames; i++)
        free(c->names[i]);
    free(c->names);
    free(c->ocsp);
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag;
    *(bool *)u = true;
    return -1;
}

static void add_name(struct cert *c, const char *name, size_t len)
{
    if (len == 0 || memchr(name, '\0', len))
        return;
    char **more = realloc(c->names, (c->nnames + 1) * sizeof(*more));
    char *copy = malloc(len + 1);
    if (!more || !copy) {
        free(copy);
        if (more)
            c->names = more;
        return;
    }
    for (size_t i = 0; i < len; i++)
        copy[i] = (char)tolower((unsigned char)name[i]);
    copy[len] = '\0';
    if (len > 1 && copy[len - 1] == '.')
        copy[len - 1] = '\0';
    c->names = more;
    c->names[c->nnames++] = copy;
}

/* The DNS names of the certificate's subjectAltName, else its CN. */
static void cert_names(struct cert *c)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(c->x509, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
        if (gn->type == GEN_DNS)
            add_name(c, (const char *)ASN1_STRING_get0_data(gn->d.dNSName),
                     (size_t)ASN1_STRING_length(gn->d.dNSName));
    }
    GENERAL_NAMES_free(sans);
    if (c->nnames)
        return;
    X509_NAME *subj = X509_get_subject_name(c->x509);
    int i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    if (i >= 0) {
        ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
        add_name(c, (const char *)ASN1_STRING_get0_data(cn), (size_t)ASN1_STRING_length(cn));
    }
}

/* Warns when x, certificate n of file f (1: the leaf, then its chain),
 * has expired or expires within TLS_EXPIRY_WARN_DAYS. */
static void warn_expiry(struct loader *ld, const struct config_file *f, X509 *x, int n)
{
    int days = 0, secs = 0;
    if (!ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)))
        return;
    long long left = (long long)days * 86400 + secs;
    char nth[24] = "";
    if (n > 1)
        snprintf(nth, sizeof(nth), "#%d in ", n);
    const char *chain = n > 1 ? " (its chain)" : "";
    if (left <= 0)
        report(ld, true, f, "certificate %s%s%s expired %lld days ago", nth, f->path, chain,
               -left / 86400);
    else if (left < TLS_EXPIRY_WARN_DAYS * 86400LL)
        report(ld, true, f, "certificate %s%s%s expires in %lld days", nth, f->path, chain,
               (left + 86399) / 86400);
}

/* Warns when the certificate, or one of its chain (what clients verify
 * it by: an expired intermediate fails them as an expired leaf does),
 * expires within TLS_EXPIRY_WARN_DAYS. */
static void cert_expiry(struct loader *ld, struct cert *c, const struct config_file *f)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(c->x509), &tm) == 1)
        c->not_after = timegm(&tm);
    warn_expiry(ld, f, c->x509, 1);
    for (int i = 0; c->chain && i < sk_X509_num(c->chain); i++)
        warn_expiry(ld, f, sk_X509_value(c->chain, i), i + 2);
}

/* Reads a certificate file (leaf, then its chain), its key, the staple. */
static bool cert_load(struct loader *ld, const struct config_tls_cert *ct, struct cert *c)
{
    BIO *b = open_file(ld, &ct->cert, "certificate");
    if (!b)
        return false;
    ERR_clear_error();
    c->x509 = PEM_read_bio_X509_AUX(b, NULL, NULL, NULL);
    if (!c->x509) {
        report(ld, false, &ct->cert, "%s holds no PEM certificate (%s)", ct->cert.path,
               ssl_reason());
        BIO_free(b);
        return false;
    }
    c->chain = sk_X509_new_null();
    X509 *x;
    ERR_clear_error();
    while (c->chain && (x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
        if (!sk_X509_push(c->chain, x)) {
            X509_free(x);
            break;
        }
    }
    BIO_free(b);
    /* The end of the file is "no start line"; anything else is a chain
     * certificate that does not parse, which would otherwise be dropped
     * and the listener serve without it (clients then fail to build the
     * chain), as nginx refuses such a file. */
    unsigned long e = ERR_peek_last_error();
    if (!c->chain ||
        (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE))) {
        report(ld, false, &ct->cert, "%s: certificate #%d in the file does not parse (%s)",
               ct->cert.path, c->chain ? sk_X509_num(c->chain) + 2 : 2, ssl_reason());
        return false;
    }
    ERR_clear_error();
    if (!(b = open_file(ld, &ct->key, "key")))
        return false;
    bool encrypted = false;
    c->key = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, &encrypted);
    BIO_free(b);
    if (!c->key) {
        if (encrypted)
            report(ld, false, &ct->key,
                   "%s is encrypted: Ferry does not ask for passphrases; decrypt it "
                   "(openssl pkey -in KEY -out KEY.plain) and protect the file instead",
                   ct->key.path);
        else
            report(ld, false, &ct->key, "%s holds no PEM private key (%s)", ct->key.path,
                   ssl_reason());
        return false;
    }
    if (X509_check_private_key(c->x509, c->key) != 1) {
        report(ld, false, &ct->key, "%s does not match the certificate in %s", ct->key.path,
               ct->cert.path);
        return false;
    }
    struct stat st;
    if (stat(ct->key.path, &st) == 0 && (st.st_mode & S_IROTH))
        report(ld, true, &ct->key, "%s is readable by every user: chmod o-r it", ct->key.path);
    c->type = EVP_PKEY_get_base_id(c->key);
    cert_names(c);
    cert_expiry(ld, c, &ct->cert);
    if (ct->ocsp_staple.path) {
        if (!(b = open_file(ld, &ct->ocsp_staple, "OCSP response")))
            return false;
        unsigned char buf[1024];
        int n;
        while ((n = BIO_read(b, buf, sizeof(buf))) > 0) {
            unsigned char *more = realloc(c->ocsp, c->ocsp_len + (size_t)n);
            if (!more)
                break;
            memcpy(more + c->ocsp_len, buf, (size_t)n);
            c->ocsp = more;
            c->ocsp_len += (size_t)n;
        }
        BIO_free(b);
        if (!c->ocsp_len) {
            report(ld, false, &ct->ocsp_staple, "%s is empty", ct->ocsp_staple.path);
            return false;
        }
    }
    return true;
}

/* ---- a listener's contexts ------------------------------------------------------------- */

struct tls_name {
    const char *name; /* lower case; "*.example.com" for a wildcard */
    SSL_CTX *ctx;
};

struct staple {
    X509 *x509; /* not owned */
    unsigned char *der;
    size_t len;
};

struct tls_server {
    SSL_CTX *def;
    SSL_CTX **ctxs;
    uint64_t *masks; /* which certificates each context holds */
    size_t nctxs;
    struct tls_name *names; /* sorted by name */
    size_t nnames;
    struct cert *certs;
    size_t ncerts;
    struct staple *staples;
    size_t nstaples;
    /* The session ID context of every context of the listener: a digest
     * of what decides whom it trusts (its address, client_verify, the
     * client_ca file's bytes). A session resumes only where it was made
     * under the same trust: not on another listener, not after a reload
     * that changed the CA (a resumed session's client certificate is not
     * verified again). */
    unsigned char sid[32];
};

/* srv->sid for the listener at address with t; false if client_ca cannot
 * be read (the loader reports that file itself). */
static bool session_context(struct tls_server *srv, const char *address, const struct config_tls *t)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    unsigned char v = (unsigned char)t->client_verify;
    ok = ok && EVP_DigestUpdate(md, "ferry session\0", 14) == 1 &&
         EVP_DigestUpdate(md, address, strlen(address) + 1) == 1 &&
         EVP_DigestUpdate(md, &v, 1) == 1;
    if (ok && t->client_ca.path) {
        FILE *f = fopen(t->client_ca.path, "rb");
        unsigned char buf[1024];
        size_t n;
        ok = f != NULL;
        while (ok && (n = fread(buf, 1, sizeof(buf), f)) > 0)
            ok = EVP_DigestUpdate(md, buf, n) == 1;
        if (f)
            fclose(f);
    }
    unsigned len = 0;
    ok = ok && EVP_DigestFinal_ex(md, srv->sid, &len) == 1 && len == sizeof(srv->sid);
    EVP_MD_CTX_free(md);
    return ok;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(((const struct tls_name *)a)->name, ((const struct tls_name *)b)->name);
}

static SSL_CTX *name_find(const struct tls_server *srv, const char *name)
{
    struct tls_name key = {.name = name};
    const struct tls_name *hit =
        bsearch(&key, srv->names, srv->nnames, sizeof(*srv->names), name_cmp);
    return hit ? hit->ctx : NULL;
}

/* The context for a server name of len bytes (not NUL-terminated; NULL:
 * no SNI): the exact name's, else "*.<name less its first label>"'s,
 * else the default. */
static SSL_CTX *sni_ctx(const struct tls_server *srv, const char *sni, size_t len)
{
    char name[256];
    if (!sni || len == 0 || len >= sizeof(name) - 1 || memchr(sni, '\0', len))
        return srv->def;
    for (size_t i = 0; i < len; i++)
        name[i] = (char)tolower((unsigned char)sni[i]);
    name[len] = '\0';
    if (name[len - 1] == '.')
        name[--len] = '\0';
    SSL_CTX *ctx = name_find(srv, name);
    const char *dot = strchr(name, '.');
    if (!ctx && dot && dot > name) {
        char wild[258];
        snprintf(wild, sizeof(wild), "*%s", dot);
        ctx = name_find(srv, wild);
    }
    return ctx ? ctx : srv->def;
}

/* SNI: the context of the name (sni_ctx). */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    const struct tls_server *srv = arg;
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!sni)
        return SSL_TLSEXT_ERR_OK;
    SSL_CTX *ctx = sni_ctx(srv, sni, strlen(sni));
    if (ctx != SSL_get_SSL_CTX(ssl))
        SSL_set_SSL_CTX(ssl, ctx);
    return SSL_TLSEXT_ERR_OK;
}

/*
 * Whether a ticket's session may resume under the ClientHello being
 * processed: only when its SNI chooses the context (the certificates)
 * that the session's own name chose. A session authenticated by a.test's
 * certificate resumed under "b.test" would let a client take b.test as
 * proven by a.test's certificate (the virtual-host confusion of
 * Delignat-Lavaud et al., 2015); RFC 6066 (3) forbids it for TLS 1.2.
 * Names served by the same certificates (x.wild.test and y.wild.test)
 * still resume, as with nginx's per-certificate session context. The
 * servername callback runs after OpenSSL decided on resumption, so the
 * SNI is read from the ClientHello itself.
 */
static bool ticket_same_certificates(SSL *ssl, SSL_SESSION *sess, const struct tls_server *srv)
{
    const unsigned char *ext;
    size_t extlen;
    const char *sni = NULL;
    size_t snilen = 0;
    /* server_name_list: a 2-byte length, then entries of a type (0:
     * host_name), a 2-byte length and the name; the first is used. */
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &extlen) == 1 &&
        extlen >= 5 && ext[2] == TLSEXT_NAMETYPE_host_name) {
        snilen = (size_t)ext[3] << 8 | ext[4];
        if (snilen > extlen - 5)
            return false;
        sni = (const char *)ext + 5;
    }
    const char *was = SSL_SESSION_get0_hostname(sess);
    return sni_ctx(srv, sni, snilen) == sni_ctx(srv, was, was ? strlen(was) : 0);
}

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl, (void)arg;
    static const unsigned char ours[] = "\x08http/1.1";
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int on_status(SSL *ssl, void *arg)
{
    const struct tls_server *srv = arg;
    X509 *x = SSL_get_certificate(ssl);
    for (size_t i = 0; i < srv->nstaples; i++) {
        if (srv->staples[i].x509 != x)
            continue;
        unsigned char *copy = OPENSSL_memdup(srv->staples[i].der, srv->staples[i].len);
        if (copy)
            SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)srv->staples[i].len);
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

static void set_protocols(SSL_CTX *ctx, unsigned protocols)
{
    SSL_CTX_set_min_proto_version(ctx,
                                  (protocols & CONFIG_TLS_V12) ? TLS1_2_VERSION : TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx,
                                  (protocols & CONFIG_TLS_V13) ? TLS1_3_VERSION : TLS1_2_VERSION);
}

static const struct config_file *tls_key_at(const struct config_tls *t, struct config_file *tmp,
                                            const char *key)
{
    tmp->path = NULL;
    tmp->key = (char *)key;
    tmp->line = t->line;
    tmp->col = t->col;
    return tmp;
}

/* A server context with the listener's settings and the certificates of
 * mask. */
static SSL_CTX *server_ctx(struct loader *ld, const struct config_tls *t, struct tls_server *srv,
                           uint64_t mask, const char *where)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    struct config_file at;
    if (!ctx) {
        report(ld, false, tls_key_at(t, &at, where), "out of memory");
        return NULL;
    }
    set_protocols(ctx, t->protocols);
    /* The server's cipher order (TLS 1.2: the intermediate list is
     * strongest first), ChaCha20 first for a client that prefers it
     * (phones without AES instructions), as nginx with
     * ssl_prefer_server_ciphers and HAProxy's defaults. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_PRIORITIZE_CHACHA);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_dh_auto(ctx, 1);
    SSL_CTX_set1_groups_list(ctx, TLS_GROUPS);
    if (SSL_CTX_set_cipher_list(ctx, t->ciphers ? t->ciphers : TLS_INTERMEDIATE_CIPHERS) != 1) {
        report(ld, false, tls_key_at(t, &at, where), "ciphers: no usable cipher in \"%s\"",
               t->ciphers);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_id_context(ctx, srv->sid, sizeof(srv->sid));
    SSL_CTX_set_timeout(ctx, TLS_SESSION_LIFETIME_S);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
    SSL_CTX_set_session_ticket_cb(ctx, on_ticket_new, on_ticket_open, srv);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, srv);
    if (srv->nstaples) {
        SSL_CTX_set_tlsext_status_cb(ctx, on_status);
        SSL_CTX_set_tlsext_status_arg(ctx, srv);
    }
    if (t->client_ca.path) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->client_ca.path);
        if (!names || sk_X509_NAME_num(names) == 0 ||
            SSL_CTX_load_verify_locations(ctx, t->client_ca.path, NULL) != 1) {
            report(ld, false, &t->client_ca, "%s: no CA certificate could be read from it",
                   t->client_ca.path);
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx,
                           SSL_VERIFY_PEER | (t->client_verify == CONFIG_CLIENT_VERIFY_REQUIRED
                                                  ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                                  : 0),
                           NULL);
    }
    for (size_t i = 0; i < srv->ncerts; i++) {
        struct cert *c = &srv->certs[i];
        if (!(mask & (1ull << i)))
            continue;
        if (SSL_CTX_use_cert_and_key(ctx, c->x509, c->key, c->chain, 1) != 1) {
            report(ld, false, &t->certs[i].cert, "%s cannot be used (%s)", t->certs[i].cert.path,
                   ssl_reason());
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    return ctx;
}

/* The certificates for a name: of each key type, the first listing it. */
static uint64_t name_mask(const struct tls_server *srv, const char *name)
{
    uint64_t mask = 0;
    int types[TLS_MAX_CERTS];
    size_t ntypes = 0;
    for (size_t i = 0; i < srv->ncerts; i++) {
        const struct cert *c = &srv->certs[i];
        bool listed = false;
        for (size_t j = 0; j < c->nnames && !listed; j++)
            listed = strcmp(c->names[j], name) == 0;
        size_t k = 0;
        while (k < ntypes && types[k] != c->type)
            k++;
        if (!listed || k < ntypes)
            continue;
        types[ntypes++] = c->type;
        mask |= 1ull << i;
    }
    return mask;
}

/* The context holding exactly mask, made when it is the first. */
static SSL_CTX *ctx_for(struct loader *ld, const struct config_tls *t, struct tls_server *srv,
                        uint64_t mask, const char *where)
{
    for (size_t i = 0; i < srv->nctxs; i++)
        if (srv->masks[i] == mask)
            return srv->ctxs[i];
    SSL_CTX *ctx = server_ctx(ld, t, srv, mask, where);
    if (!ctx)
        return NULL;
    srv->ctxs[srv->nctxs] = ctx;
    srv->masks[srv->nctxs++] = mask;
    return ctx;
}

static void server_free(struct tls_server *srv)
{
    if (!srv)
        return;
    for (size_t i = 0; i < srv->nctxs; i++)
        SSL_CTX_free(srv->ctxs[i]);
    for (size_t i = 0; i < srv->ncerts; i++)
        cert_fini(&srv->certs[i]);
    for (size_t i = 0; i < srv->nstaples; i++)
        free(srv->staples[i].der);
    free(srv->ctxs);
    free(srv->masks);
    free(srv->names);
    free(srv->certs);
    free(srv->staples);
    free(srv);
}

static struct tls_server *server_load(struct loader *ld, const struct config_tls *t,
                                      const char *address)
{
    struct config_file at;
    if (t->ncerts > TLS_MAX_CERTS) {
        report(ld, false, tls_key_at(t, &at, "tls.certificates"),
               "at most %d certificates per listener", TLS_MAX_CERTS);
        return NULL;
    }
    struct tls_server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return NULL;
    if (!session_context(srv, address, t)) {
        report(ld, false, t->client_ca.path ? &t->client_ca : tls_key_at(t, &at, "tls"),
               "%s: cannot be read", t->client_ca.path ? t->client_ca.path : "session context");
        free(srv);
        return NULL;
    }
    srv->certs = calloc(t->ncerts, sizeof(*srv->certs));
    srv->staples = calloc(t->ncerts, sizeof(*srv->staples));
    bool ok = srv->certs && srv->staples;
    for (size_t i = 0; srv->certs && srv->staples && i < t->ncerts; i++) {
        srv->ncerts = i + 1;
        if (!cert_load(ld, &t->certs[i], &srv->certs[i])) {
            ok = false; /* the others are read too: every problem is reported */
            continue;
        }
        if (srv->certs[i].ocsp) {
            struct staple *st = &srv->staples[srv->nstaples++];
            st->x509 = srv->certs[i].x509;
            st->der = srv->certs[i].ocsp;
            st->len = srv->certs[i].ocsp_len;
            srv->certs[i].ocsp = NULL;
        }
    }
    size_t total = 0;
    for (size_t i = 0; ok && i < srv->ncerts; i++)
        total += srv->certs[i].nnames;
    srv->names = calloc(total + 1, sizeof(*srv->names));
    srv->ctxs = calloc(total + 1, sizeof(*srv->ctxs));
    srv->masks = calloc(total + 1, sizeof(*srv->masks));
    ok = ok && srv->names && srv->ctxs && srv->masks;
    for (size_t i = 0; ok && i < srv->ncerts; i++) {
        for (size_t j = 0; ok && j < srv->certs[i].nnames; j++) {
            const char *name = srv->certs[i].names[j];
            size_t k = 0;
            while (k < srv->nnames && strcmp(srv->names[k].name, name) != 0)
                k++;
            if (k < srv->nnames)
                continue;
            SSL_CTX *ctx = ctx_for(ld, t, srv, name_mask(srv, name), t->certs[i].cert.key);
            ok = ctx != NULL;
            srv->names[srv->nnames++] = (struct tls_name){.name = name, .ctx = ctx};
        }
    }
    if (ok) {
        const struct cert *first = &srv->certs[0];
        qsort(srv->names, srv->nnames, sizeof(*srv->names), name_cmp);
        srv->def = first->nnames ? name_find(srv, first->names[0])
                                 : ctx_for(ld, t, srv, 1, t->certs[0].cert.key);
        ok = srv->def != NULL;
    }
    if (!ok) {
        server_free(srv);
        return NULL;
    }
    return srv;
}

void tls_cert_expiry(const struct config *cfg,
                     void (*fn)(void *arg, const char *listener, const char *file,
                                int64_t not_after),
                     void *arg)
{
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct config_tls *t = cfg->listeners[i].tls;
        const struct tls_server *srv = t ? t->ctx : NULL;
        for (size_t j = 0; srv && j < srv->ncerts; j++)
            fn(arg, cfg->listeners[i].addr.text, t->certs[j].cert.path,
               (int64_t)srv->certs[j].not_after);
    }
}

/* ---- an upstream's context ------------------------------------------------------------- */

struct session_slot {
    pthread_mutex_t mu;
    SSL_SESSION *sess;
};

struct tls_client {
    SSL_CTX *ctx;
    struct session_slot *slots; /* one per server */
    size_t nslots;
};

static int slot_index = -1; /* SSL ex_data: the connection's session_slot */

/* A new session (TLS 1.3: a ticket after the handshake) replaces the
 * server's last one: the next connection to it resumes. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct session_slot *slot = SSL_get_ex_data(ssl, slot_index);
    if (!slot)
        return 0;
    /* A copy: sess is the connection's own session, which OpenSSL marks
     * not resumable when the connection is freed without a shutdown. */
    SSL_SESSION *copy = SSL_SESSION_dup(sess);
    if (!copy)
        return 0;
    pthread_mutex_lock(&slot->mu);
    SSL_SESSION *old = slot->sess;
    slot->sess = copy;
    pthread_mutex_unlock(&slot->mu);
    SSL_SESSION_free(old);
    return 0; /* sess stays OpenSSL's */
}

static void client_free(struct tls_client *cl)
{
    if (!cl)
        return;
    for (size_t i = 0; i < cl->nslots; i++) {
        SSL_SESSION_free(cl->slots[i].sess);
        pthread_mutex_destroy(&cl->slots[i].mu);
    }
    free(cl->slots);
    SSL_CTX_free(cl->ctx);
    free(cl);
}

static struct tls_client *client_load(struct loader *ld, const struct config_upstream *up)
{
    const struct config_upstream_tls *t = up->tls;
    struct tls_client *cl = calloc(1, sizeof(*cl));
    if (!cl)
        return NULL;
    cl->slots = calloc(up->nservers, sizeof(*cl->slots));
    cl->ctx = SSL_CTX_new(TLS_client_method());
    if (!cl->slots || !cl->ctx) {
        client_free(cl);
        return NULL;
    }
    cl->nslots = up->nservers;
    for (size_t i = 0; i < cl->nslots; i++)
        pthread_mutex_init(&cl->slots[i].mu, NULL);
    SSL_CTX *ctx = cl->ctx;
    set_protocols(ctx, t->protocols);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x08http/1.1", 9);
    bool ok = true;
    if (t->ca.path) {
        BIO *b = open_file(ld, &t->ca, "CA file");
        X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        if (b && !x) {
            report(ld, false, &t->ca, "%s holds no PEM certificate", t->ca.path);
        } else if (x && SSL_CTX_load_verify_locations(ctx, t->ca.path, NULL) != 1) {
            report(ld, false, &t->ca, "%s: %s", t->ca.path, ssl_reason());
            X509_free(x);
            x = NULL;
        }
        ok = x != NULL;
        X509_free(x);
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        ok = false;
    }
    if (ok && t->cert.path) {
        struct config_tls_cert ct = {.cert = t->cert, .key = t->key};
        struct cert c = {0};
        ok =
            cert_load(ld, &ct, &c) && SSL_CTX_use_cert_and_key(ctx, c.x509, c.key, c.chain, 1) == 1;
        cert_fini(&c);
    }
    if (!ok) {
        client_free(cl);
        return NULL;
    }
    return cl;
}

/* ---- loading and freeing a config's contexts ------------------------------------------- */

static void config_tls_free(struct config *cfg)
{
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        struct config_tls *t = cfg->listeners[i].tls;
        if (t) {
            server_free(t->ctx);
            t->ctx = NULL;
        }
    }
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        struct config_upstream_tls *t = cfg->upstreams[i].tls;
        if (t) {
            client_free(t->ctx);
            t->ctx = NULL;
        }
    }
}

int tls_config_load(struct config *cfg, FILE *diag)
{
    struct loader ld = {.cfg = cfg, .diag = diag};
    if (slot_index < 0)
        slot_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    if (!ticket_cipher) /* kept for the life of the process */
        ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        struct config_tls *t = cfg->listeners[i].tls;
        if (t && !(t->ctx = server_load(&ld, t, cfg->listeners[i].addr.text)) && !ld.errors)
            ld.errors++;
    }
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        struct config_upstream *up = &cfg->upstreams[i];
        if (up->tls && !(up->tls->ctx = client_load(&ld, up)) && !ld.errors)
            ld.errors++;
    }
    if (ld.errors) {
        config_tls_free(cfg);
        if (diag) {
            fprintf(diag, "%s: %u error%s in TLS files\n", cfg->path ? cfg->path : "config",
                    ld.errors, ld.errors == 1 ? "" : "s");
            fflush(diag);
        }
        return -1;
    }
    cfg->tls_free = config_tls_free;
    cfg->nwarnings += ld.warnings;
    return 0;
}

/* ---- the transport ------------------------------------------------------------------- */

struct tls_conn {
    SSL *ssl;
    struct io_stream *s;
    int err;             /* sticky once failed: -errno */
    const char *failure; /* why it failed (lives as long as the process) */
    bool server;
    bool first_checked; /* server: the first byte was a TLS handshake record */
    bool done;          /* the handshake completed */
    bool quiet;         /* closed before sending a byte: not worth a log line */
    /* A PROXY header read from the socket before the handshake: pbuf
     * holds what was taken of it so far (NULL: none expected). */
    unsigned char *pbuf;
    size_t plen;
    bool proxy_done;
    struct proxyproto_result proxy;
    char *subject, *fingerprint; /* the verified client certificate's, made once */
    bool identity_done;
};

/* Empties this thread's error queue before an SSL call, so that
 * SSL_get_error reads only what the call left. Looked at first: clearing
 * an empty queue costs OpenSSL ~800 instructions (it wipes every slot),
 * twice per keep-alive request. */
static inline void err_clear(void)
{
    if (ERR_peek_error())
        ERR_clear_error();
}

static __thread const char *last_failure;
static __thread unsigned char gather[TLS_RECORD];

const char *tls_last_failure(void)
{
    return last_failure ? last_failure : "upstream TLS handshake failed";
}

/* What an SSL call's result r means for io: -EAGAIN for the direction of
 * the call (want_self), the other direction's IO_TP_WANT_*, 0 at the
 * peer's close, or a failure (sticky, its reason recorded). */
static int ssl_result(struct tls_conn *t, int r, int want_self)
{
    int e = SSL_get_error(t->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        return want_self == SSL_ERROR_WANT_READ ? -EAGAIN : IO_TP_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return want_self == SSL_ERROR_WANT_WRITE ? -EAGAIN : IO_TP_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        if (t->done)
            return 0;
        t->failure = "closed during the handshake";
        return t->err = -ECONNRESET;
    case SSL_ERROR_SYSCALL:
        if (errno == EAGAIN || errno == EINTR)
            return -EAGAIN;
        if (t->done && errno == 0)
            return 0;
        t->failure = t->done ? "connection reset" : "closed during the handshake";
        return t->err = errno ? -errno : -ECONNRESET;
    default:
        break;
    }
    long v = t->server ? X509_V_OK : SSL_get_verify_result(t->ssl);
    if (v != X509_V_OK)
        t->failure = intern("certificate verify failed", X509_verify_cert_error_string(v));
    else
        t->failure = intern("handshake failed", ssl_reason());
    return t->err = -EPROTO;
}

/* A cleartext HTTP request on a TLS port is answered (as nginx does) in
 * cleartext; what it sent is read first, so the close is not a reset. */
static void answer_plaintext(int fd)
{
#define PLAIN_BODY "{\"error\":\"plain HTTP request sent to a TLS port\",\"status\":400}\n"
    static const char msg[] =
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 63\r\n"
        "Connection: close\r\n\r\n" PLAIN_BODY;
    _Static_assert(sizeof(PLAIN_BODY) - 1 == 63, "the Content-Length above");
    char sink[512];
    for (int i = 0; i < 64 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
        ;
    (void)!send(fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    shutdown(fd, SHUT_WR);
}

/* Looks at a client's first byte before OpenSSL does: a TLS handshake
 * record starts with 22. Returns 0, -EAGAIN, or a failure. */
static int check_first(struct tls_conn *t, int fd)
{
    unsigned char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? -EAGAIN : (t->err = -errno);
    if (n == 0) {
        t->quiet = true; /* a port probe, a health check: nothing to log */
        return t->err = -ECONNRESET;
    }
    if (b == 22) {
        t->first_checked = true;
        return 0;
    }
    STAT_ADD(failed);
    if (b >= 'A' && b <= 'Z') {
        STAT_ADD(plaintext);
        t->failure = "plain HTTP request sent to a TLS port (answered 400)";
        answer_plaintext(fd);
    } else {
        t->failure = "not a TLS handshake (no ClientHello)";
    }
    return t->err = -EPROTO;
}

/*
 * Reads the PROXY header in front of the ClientHello, taking from the
 * socket only bytes that belong to it (an incomplete header is a prefix:
 * all of it is taken, so a level-triggered poll never spins on it).
 * Returns 0 once read, -EAGAIN, or a failure.
 */
static int read_proxy(struct tls_conn *t, int fd)
{
    size_t cap = PROXYPROTO_MAX_HEADER;
    ssize_t n = recv(fd, t->pbuf + t->plen, cap - t->plen, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? -EAGAIN : (t->err = -errno);
    if (n == 0) {
        t->failure = "closed before the PROXY header";
        return t->err = -ECONNRESET;
    }
    ssize_t r = proxyproto_parse(t->pbuf, t->plen + (size_t)n, &t->proxy);
    size_t take = r > 0 ? (size_t)r - t->plen : r == PROXYPROTO_INCOMPLETE ? (size_t)n : 0;
    if (r < 0 && r != PROXYPROTO_INCOMPLETE) {
        t->failure = intern("PROXY header", proxyproto_error_str((int)r));
        return t->err = -EPROTO;
    }
    if (recv(fd, t->pbuf + t->plen, take, MSG_DONTWAIT) != (ssize_t)take)
        return t->err = -EIO;
    t->plen += take;
    if (r == PROXYPROTO_INCOMPLETE)
        return -EAGAIN;
    t->proxy_done = true;
    free(t->pbuf);
    t->pbuf = NULL;
    return 0;
}

bool tls_proxy_header(const struct io_stream *s, struct proxyproto_result *out)
{
    if (!tls_is(s))
        return false;
    const struct tls_conn *t = io_transport_ctx(s);
    if (!t->proxy_done)
        return false;
    *out = t->proxy;
    return true;
}

static int tp_handshake(struct io_stream *s)
{
    struct tls_conn *t = io_transport_ctx(s);
    if (t->err)
        return t->err;
    if (t->pbuf) {
        int r = read_proxy(t, io_transport_fd(s));
        if (r < 0)
            return r;
    }
    if (t->server && !t->first_checked) {
        int r = check_first(t, io_transport_fd(s));
        if (r < 0)
            return r;
    }
    err_clear();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        t->done = true;
        if (t->server) {
            STAT_ADD(handshakes);
            if (SSL_session_reused(t->ssl))
                STAT_ADD(resumed);
        }
        return 0;
    }
    r = ssl_result(t, r, SSL_ERROR_WANT_READ);
    if (r == IO_TP_WANT_READ)
        r = -EAGAIN;
    if (r == 0)
        r = t->err = -ECONNRESET;
    if (t->server && r == -EPROTO)
        STAT_ADD(failed);
    return r;
}

static ssize_t tp_readv(struct io_stream *s, struct iovec *v, int n)
{
    struct tls_conn *t = io_transport_ctx(s);
    if (t->err)
        return t->err;
    err_clear();
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        char *p = v[i].iov_base;
        size_t left = v[i].iov_len;
        while (left > 0) {
            size_t got = 0;
            int r = SSL_read_ex(t->ssl, p, left, &got);
            if (r == 1) {
                total += got;
                p += got;
                left -= got;
                if (!SSL_has_pending(t->ssl))
                    return (ssize_t)total;
                continue;
            }
            int e = ssl_result(t, r, SSL_ERROR_WANT_READ);
            return total ? (ssize_t)total : e;
        }
    }
    return (ssize_t)total;
}

static ssize_t tp_writev(struct io_stream *s, const struct iovec *v, int n)
{
    struct tls_conn *t = io_transport_ctx(s);
    if (t->err)
        return t->err;
    err_clear();
    size_t total = 0, off = 0;
    int i = 0;
    while (i < n) {
        const void *p = (const char *)v[i].iov_base + off;
        size_t len = v[i].iov_len - off;
        if (len < TLS_RECORD && i + 1 < n) {
            /* Small chains go out as one record (and one write). */
            size_t o = 0, joff = off;
            for (int j = i; j < n && o < TLS_RECORD; j++, joff = 0) {
                size_t c = v[j].iov_len - joff;
                if (c > TLS_RECORD - o)
                    c = TLS_RECORD - o;
                memcpy(gather + o, (const char *)v[j].iov_base + joff, c);
                o += c;
            }
            p = gather;
            len = o;
        }
        size_t done = 0;
        int r = SSL_write_ex(t->ssl, p, len, &done);
        if (r != 1) {
            int e = ssl_result(t, r, SSL_ERROR_WANT_WRITE);
            return total ? (ssize_t)total : e;
        }
        total += done;
        while (done > 0 && i < n) {
            size_t rest = v[i].iov_len - off;
            if (done < rest) {
                off += done;
                done = 0;
            } else {
                done -= rest;
                off = 0;
                i++;
            }
        }
        while (i < n && v[i].iov_len == 0)
            i++;
    }
    return (ssize_t)total;
}

static int tp_shutdown(struct io_stream *s)
{
    struct tls_conn *t = io_transport_ctx(s);
    if (t->done && !t->err) {
        err_clear();
        SSL_shutdown(t->ssl); /* close_notify, if the socket takes it */
    }
    return shutdown(io_transport_fd(s), SHUT_WR) == 0 ? 0 : -errno;
}

static void tp_fini(struct io_stream *s)
{
    struct tls_conn *t = io_transport_ctx(s);
    SSL_free(t->ssl);
    free(t->pbuf);
    free(t->subject);
    free(t->fingerprint);
    free(t);
}

static bool tp_pending(struct io_stream *s)
{
    struct tls_conn *t = io_transport_ctx(s);
    return !t->err && SSL_has_pending(t->ssl);
}

static const struct io_transport tls_transport = {
    .name = "tls",
    .readv = tp_readv,
    .writev = tp_writev,
    .shutdown = tp_shutdown,
    .fini = tp_fini,
    .handshake = tp_handshake,
    .pending = tp_pending,
};

bool tls_is(const struct io_stream *s)
{
    return s && io_stream_transport(s) == &tls_transport;
}

bool tls_failed(const struct io_stream *s, const char **why)
{
    if (!tls_is(s))
        return false;
    const struct tls_conn *t = io_transport_ctx(s);
    if ((t->done && !t->err) || t->quiet)
        return false;
    *why = t->failure ? t->failure : t->done ? "failed" : "handshake not finished";
    return true;
}

/* The longest subject passed on (RFC 2253 text; a CA may sign a subject of
 * many RDNs). One over it is no identity at all: a cut subject could read
 * as another, shorter one, so a route that requires a certificate refuses
 * it rather than pass a prefix upstream. */
#define TLS_SUBJECT_MAX 4096

/* The subject and fingerprint of the verified peer certificate, once. */
static void identity_make(struct tls_conn *t)
{
    t->identity_done = true;
    X509 *x = SSL_get0_peer_certificate(t->ssl);
    if (!x || SSL_get_verify_result(t->ssl) != X509_V_OK)
        return;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b || X509_digest(x, EVP_sha256(), md, &mdlen) != 1 ||
        X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) < 0) {
        BIO_free(b);
        return;
    }
    char *text;
    long len = BIO_get_mem_data(b, &text);
    if (len < 0 || len > TLS_SUBJECT_MAX) {
        BIO_free(b);
        return;
    }
    t->subject = malloc((size_t)len + 1);
    t->fingerprint = malloc(2 * mdlen + 1);
    if (t->subject && t->fingerprint) {
        memcpy(t->subject, text, (size_t)len);
        t->subject[len] = '\0';
        for (unsigned i = 0; i < mdlen; i++)
            snprintf(t->fingerprint + 2 * i, 3, "%02x", md[i]);
    } else {
        free(t->subject);
        free(t->fingerprint);
        t->subject = t->fingerprint = NULL;
    }
    BIO_free(b);
}

bool tls_client_identity(const struct io_stream *s, const char **subject, const char **fingerprint)
{
    if (!tls_is(s))
        return false;
    struct tls_conn *t = io_transport_ctx(s);
    if (!t->server || !t->done || t->err)
        return false;
    if (!t->identity_done)
        identity_make(t);
    if (!t->subject)
        return false;
    if (subject)
        *subject = t->subject;
    if (fingerprint)
        *fingerprint = t->fingerprint;
    return true;
}

static struct tls_conn *conn_new(struct io_stream *s, SSL_CTX *ctx, bool server)
{
    struct tls_conn *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->ssl = SSL_new(ctx);
    if (!t->ssl || SSL_set_fd(t->ssl, io_transport_fd(s)) != 1) {
        SSL_free(t->ssl);
        free(t);
        return NULL;
    }
    t->s = s;
    t->server = server;
    if (server)
        SSL_set_accept_state(t->ssl);
    else
        SSL_set_connect_state(t->ssl);
    return t;
}

int tls_accept(struct io_stream *s, const struct config_tls *cfg, bool proxy_header)
{
    const struct tls_server *srv = cfg->ctx;
    struct tls_conn *t = conn_new(s, srv->def, true);
    if (!t)
        return -ENOMEM;
    if (proxy_header && !(t->pbuf = malloc(PROXYPROTO_MAX_HEADER))) {
        SSL_free(t->ssl);
        free(t);
        return -ENOMEM;
    }
    io_stream_set_transport(s, &tls_transport, t);
    return 0;
}

/* An IP literal (verified against the certificate's IP addresses, and
 * never sent as SNI). */
static bool is_ip(const char *name)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

/* The name an upstream connection sends and verifies (see tls_connect),
 * into buf; NULL with *why set when there is none (a unix socket without
 * sni) or it cannot be a host name (too long). */
static const char *upstream_name(const struct config_upstream *up, unsigned server, char *buf,
                                 size_t size, const char **why)
{
    const char *name = up->tls->sni;
    if (!name && up->host_header == CONFIG_HOST_LITERAL)
        name = up->host_literal;
    if (!name && server < up->nservers)
        name = up->servers[server].addr.host;
    if (!name || !*name) {
        *why = "upstream TLS: no name to verify the certificate against (set tls.sni)";
        return NULL;
    }
    if (snprintf(buf, size, "%s", name) >= (int)size) {
        *why = "upstream TLS: invalid server name (too long)";
        return NULL;
    }
    char *colon = strrchr(buf, ':');
    if (buf[0] == '[') {
        /* An IPv6 literal as a Host is bracketed ("[::1]", "[::1]:8443"):
         * the address inside is what is verified (and never sent as SNI). */
        char *end = strchr(buf, ']');
        if (end && (end[1] == '\0' || end[1] == ':')) {
            *end = '\0';
            memmove(buf, buf + 1, (size_t)(end - buf));
        }
    } else if (colon && colon == strchr(buf, ':')) {
        *colon = '\0'; /* a literal host:port */
    }
    /* A fully qualified "api.internal." is the same name; SNI carries no
     * trailing dot (RFC 6066, 3) and OpenSSL's host check does not take one. */
    size_t len = strlen(buf);
    if (len > 1 && buf[len - 1] == '.')
        buf[len - 1] = '\0';
    return buf;
}

int tls_connect(struct io_stream *s, const struct config_upstream *up, unsigned server,
                int64_t deadline, struct io_stream *watch)
{
    struct tls_client *cl = up->tls->ctx;
    char namebuf[256];
    const char *why = NULL;
    const char *name = upstream_name(up, server, namebuf, sizeof(namebuf), &why);
    struct tls_conn *t = conn_new(s, cl->ctx, false);
    last_failure = NULL;
    if (!t)
        return -ENOMEM;
    SSL *ssl = t->ssl;
    /* Verification without a name would accept any certificate the CA
     * signed: no name fails closed, and with verify off is no SNI. */
    bool ok = name || !up->tls->verify;
    if (name && !is_ip(name))
        ok = SSL_set_tlsext_host_name(ssl, name) == 1;
    if (ok && up->tls->verify) {
        SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
        ok = is_ip(name) ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1
                         : SSL_set1_host(ssl, name) == 1;
    }
    struct session_slot *slot = server < cl->nslots ? &cl->slots[server] : NULL;
    if (slot) {
        SSL_set_ex_data(ssl, slot_index, slot);
        pthread_mutex_lock(&slot->mu);
        if (slot->sess)
            SSL_set_session(ssl, slot->sess);
        pthread_mutex_unlock(&slot->mu);
    }
    io_stream_set_transport(s, &tls_transport, t);
    if (!ok) {
        last_failure = why ? why : "upstream TLS: invalid server name";
        return -EPROTO;
    }
    int r = io_handshake(s, deadline, watch);
    if (r == -EPROTO || (r < 0 && t->failure))
        last_failure = intern("upstream TLS", t->failure);
    return r;
}
