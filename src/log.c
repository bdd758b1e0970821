/* log: see log.h. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level min_level = LOG_LEVEL_INFO;
static enum log_format access_format = LOG_FORMAT_JSON;
static char *access_path;
static int access_fd = -1;
static pthread_mutex_t reopen_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *level_name[] = {"debug", "info", "warn", "error"};

static int open_access(const char *path)
{
    if (strcmp(path, "stderr") == 0)
        return STDERR_FILENO;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    return fd < 0 ? -errno : fd;
}

int log_init(enum log_level level, enum log_format format, const char *path)
{
    min_level = level;
    access_format = format;
    if (!path) {
        access_fd = -1;
        return 0;
    }
    int fd = open_access(path);
    if (fd < 0)
        return fd;
    access_path = strdup(path);
    access_fd = fd;
    return 0;
}

int log_reopen(void)
{
    if (!access_path || strcmp(access_path, "stderr") == 0)
        return 0;
    int fd = open_access(access_path);
    if (fd < 0)
        return fd;
    pthread_mutex_lock(&reopen_lock);
    int old = access_fd;
    /* dup2 swaps the file under the same number: writers never see a gap. */
    dup2(fd, old);
    close(fd);
    pthread_mutex_unlock(&reopen_lock);
    return 0;
}

static void vlog(enum log_level level, const char *suffix, const char *fmt, va_list ap)
{
    char line[1024];
    int n = snprintf(line, sizeof(line), "ferry: %s: ", level_name[level]);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    if (suffix) {
        int k = snprintf(line + len, sizeof(line) - len - 1, "%s", suffix);
        len += k < 0 ? 0 : (size_t)k;
        if (len > sizeof(line) - 2)
            len = sizeof(line) - 2;
    }
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, NULL, fmt, ap);
    va_end(ap);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool log_ratelimited(int64_t *last, int64_t interval_ms, enum log_level level, const char *fmt, ...)
{
    int64_t now = now_ms();
    int64_t prev = __atomic_load_n(last, __ATOMIC_RELAXED);
    if (prev != 0 && now - prev < interval_ms)
        return false;
    __atomic_store_n(last, now, __ATOMIC_RELAXED);
    if (level < min_level)
        return false;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, NULL, fmt, ap);
    va_end(ap);
    return true;
}

/* FNV-1a, folded to 32 bits and never 0 (0 marks an empty slot). */
static uint32_t key_hash(const char *key)
{
    uint64_t h = 14695981039346656037ull;
    for (const unsigned char *p = (const unsigned char *)(key ? key : ""); *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    if (!key)
        h ^= 0x9e3779b97f4a7c15ull; /* NULL differs from "" */
    uint32_t x = (uint32_t)(h ^ (h >> 32));
    return x ? x : 1;
}

/*
 * A slot holds (key hash << 32 | low 32 bits of the ms clock) in one word,
 * so key and time change together. The clock's low half wraps every 49
 * days; the difference is taken modulo 2^32, which is right for any
 * interval under that.
 */
bool log_ratelimited_key(struct log_ratelimit *rl, const char *key, int64_t interval_ms,
                         enum log_level level, const char *fmt, ...)
{
    uint32_t h = key_hash(key);
    uint32_t now = (uint32_t)now_ms();
    size_t i = h % LOG_RATELIMIT_SLOTS;
    uint64_t want = (uint64_t)h << 32 | now;
    uint64_t cur = __atomic_load_n(&rl->slot[i], __ATOMIC_RELAXED);
    for (;;) {
        if (cur != 0 && (uint32_t)(cur >> 32) == h &&
            (int64_t)(uint32_t)(now - (uint32_t)cur) < interval_ms) {
            __atomic_fetch_add(&rl->suppressed[i], 1, __ATOMIC_RELAXED);
            return false;
        }
        if (__atomic_compare_exchange_n(&rl->slot[i], &cur, want, false, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
            break;
        /* Another thread changed the slot: judge again against its value. */
    }
    /* Lines dropped for another key that shared the slot are counted here
     * too: the count is a hint, not a ledger. */
    uint32_t dropped = __atomic_exchange_n(&rl->suppressed[i], 0, __ATOMIC_RELAXED);
    if (level < min_level)
        return false;
    char suffix[48];
    if (dropped)
        snprintf(suffix, sizeof(suffix), " (%u more suppressed)", dropped);
    va_list ap;
    va_start(ap, fmt);
    vlog(level, dropped ? suffix : NULL, fmt, ap);
    va_end(ap);
    return true;
}

bool log_access_enabled(void)
{
    return access_fd >= 0;
}

/* A line being built in a fixed buffer; writes past cap are dropped (the
 * budgets below keep every part within its buffer). */
struct line {
    char *buf;
    size_t cap, len;
};

static void put_raw(struct line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put_raw(struct line *l, const char *fmt, ...)
{
    if (l->len >= l->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(l->buf + l->len, l->cap - l->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    l->len = l->len + (size_t)n < l->cap ? l->len + (size_t)n : l->cap - 1;
}

static void put_bytes(struct line *l, const char *s, size_t n)
{
    if (n > l->cap - l->len)
        n = l->cap - l->len;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static const char hex[] = "0123456789ABCDEF";

/* How many bytes one input byte takes, escaped for json or combined. */
static size_t esc_len(enum log_format f, unsigned char c)
{
    if (f == LOG_FORMAT_JSON) {
        if (c == '"' || c == '\\')
            return 2;
        return c < 0x20 || c >= 0x7f ? 6 : 1;
    }
    return c == '"' || c == '\\' || c < 0x20 || c > 0x7e ? 4 : 1;
}

static void put_esc(struct line *l, enum log_format f, unsigned char c)
{
    char e[6];
    size_t n = esc_len(f, c);
    if (n == 1) {
        e[0] = (char)c;
    } else if (n == 2) {
        e[0] = '\\';
        e[1] = (char)c;
    } else if (n == 6) { /* \u00XX: the byte read as Latin-1 */
        memcpy(e, "\\u00", 4);
        e[4] = hex[c >> 4];
        e[5] = hex[c & 15];
    } else { /* \xXX, as nginx writes its log variables */
        e[0] = '\\';
        e[1] = 'x';
        e[2] = hex[c >> 4];
        e[3] = hex[c & 15];
    }
    put_bytes(l, e, n);
}

/*
 * Appends s[0..len) escaped for the format, in at most `budget` bytes:
 * when the whole does not fit, as many whole escaped characters as leave
 * room for LOG_TRUNCATED, then the marker. Returns the bytes written.
 */
static size_t put_field(struct line *l, enum log_format f, const char *s, size_t len, size_t budget)
{
    size_t need = 0, i;
    for (i = 0; i < len && need <= budget; i++)
        need += esc_len(f, (unsigned char)s[i]);
    size_t start = l->len;
    if (need <= budget && need == len) { /* nothing to escape: the usual case */
        put_bytes(l, s, len);
        return len;
    }
    if (need <= budget) {
        for (i = 0; i < len; i++)
            put_esc(l, f, (unsigned char)s[i]);
        return l->len - start;
    }
    size_t room = budget > sizeof(LOG_TRUNCATED) - 1 ? budget - (sizeof(LOG_TRUNCATED) - 1) : 0;
    for (i = 0, need = 0; i < len; i++) {
        size_t e = esc_len(f, (unsigned char)s[i]);
        if (need + e > room)
            break;
        need += e;
        put_esc(l, f, (unsigned char)s[i]);
    }
    if (budget >= sizeof(LOG_TRUNCATED) - 1)
        put_bytes(l, LOG_TRUNCATED, sizeof(LOG_TRUNCATED) - 1);
    return l->len - start;
}

/* A JSON string (null for NULL) in at most budget bytes, quotes included. */
static void put_json(struct line *l, const char *s, size_t len, size_t budget)
{
    if (!s) {
        put_bytes(l, "null", 4);
        return;
    }
    put_bytes(l, "\"", 1);
    put_field(l, LOG_FORMAT_JSON, s, len, budget > 2 ? budget - 2 : 0);
    put_bytes(l, "\"", 1);
}

static size_t slen(const char *s)
{
    return s ? strlen(s) : 0;
}

/* Shares of the line for the fields a client or config can make long
 * (bytes of output, quotes included). The path gets the rest. */
#define BUDGET_CLIENT 64
#define BUDGET_METHOD 64
#define BUDGET_HOST 256
#define BUDGET_NAME 130 /* route and upstream names, server address */
#define BUDGET_ID 160
#define BUDGET_ERROR 256
/* a client certificate's subject */
#define BUDGET_SUBJECT 256
#define TAIL_MAX 1536 /* what follows the path: numbers, names, id, error */

/* Per thread, not on a coroutine's stack. */
static __thread char line_buf[LOG_LINE_MAX];
static __thread char tail_buf[TAIL_MAX];

static void json_tail(struct line *t, const struct log_access *a)
{
    put_raw(t, ",\"status\":%d,\"bytes\":%llu,\"bytes_received\":%llu,\"route\":", a->status,
            (unsigned long long)a->bytes_sent, (unsigned long long)a->bytes_received);
    put_json(t, a->route, slen(a->route), BUDGET_NAME);
    put_raw(t, ",\"upstream\":");
    put_json(t, a->upstream_server, slen(a->upstream_server), BUDGET_NAME);
    put_raw(t, ",\"upstream_name\":");
    put_json(t, a->upstream, slen(a->upstream), BUDGET_NAME);
    if (a->upstream_status)
        put_raw(t, ",\"upstream_status\":%d", a->upstream_status);
    else
        put_raw(t, ",\"upstream_status\":null");
    if (a->upstream_retries)
        put_raw(t, ",\"upstream_retries\":%u", a->upstream_retries);
    put_raw(t, ",\"request_id\":");
    put_json(t, a->request_id, a->request_id_len, BUDGET_ID);
    if (a->identity) {
        put_raw(t, ",\"identity\":");
        put_json(t, a->identity, strlen(a->identity), BUDGET_NAME);
    }
    put_raw(t, ",\"duration_ms\":%.3f", a->duration_ms);
    if (a->upstream_connect_ms >= 0)
        put_raw(t, ",\"upstream_connect_ms\":%.3f", a->upstream_connect_ms);
    if (a->upstream_header_ms >= 0)
        put_raw(t, ",\"upstream_header_ms\":%.3f", a->upstream_header_ms);
    if (a->error) {
        put_raw(t, ",\"error\":");
        put_json(t, a->error, strlen(a->error), BUDGET_ERROR);
    }
    if (a->tls_client_subject) {
        put_raw(t, ",\"tls_client_subject\":");
        put_json(t, a->tls_client_subject, strlen(a->tls_client_subject), BUDGET_SUBJECT);
        put_raw(t, ",\"tls_client_fingerprint\":");
        put_json(t, a->tls_client_fingerprint, slen(a->tls_client_fingerprint), 70);
    }
    put_raw(t, "}");
}

size_t log_access_format(const struct log_access *a, enum log_format format,
                         const struct timespec *now, char *out)
{
    struct line l = {out, LOG_LINE_MAX, 0}, t = {tail_buf, sizeof(tail_buf), 0};
    struct tm tm;
    gmtime_r(&now->tv_sec, &tm);
    char when[40];
    if (format == LOG_FORMAT_COMBINED) {
        strftime(when, sizeof(when), "%d/%b/%Y:%H:%M:%S +0000", &tm);
        if (a->client)
            put_field(&l, format, a->client, strlen(a->client), BUDGET_CLIENT);
        else
            put_bytes(&l, "-", 1);
        put_raw(&l, " - ");
        if (a->identity)
            put_field(&l, format, a->identity, strlen(a->identity), BUDGET_NAME);
        else
            put_bytes(&l, "-", 1);
        put_raw(&l, " [%s] \"", when);
        if (a->method)
            put_field(&l, format, a->method, a->method_len, BUDGET_METHOD);
        else
            put_bytes(&l, "-", 1);
        put_bytes(&l, " ", 1);
        put_raw(&t, " HTTP/1.1\" %d %llu \"-\" \"-\"", a->status,
                (unsigned long long)a->bytes_sent);
        size_t room = LOG_LINE_MAX - 1 - l.len - t.len;
        if (a->path)
            put_field(&l, format, a->path, a->path_len, room);
        else
            put_bytes(&l, "-", 1);
    } else {
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
        put_raw(&l, "{\"time\":\"%s.%03ldZ\",\"client\":", when, now->tv_nsec / 1000000);
        put_json(&l, a->client, slen(a->client), BUDGET_CLIENT);
        put_raw(&l, ",\"method\":");
        put_json(&l, a->method, a->method_len, BUDGET_METHOD);
        put_raw(&l, ",\"host\":");
        put_json(&l, a->host, a->host_len, BUDGET_HOST);
        put_raw(&l, ",\"path\":");
        json_tail(&t, a);
        put_json(&l, a->path, a->path_len, LOG_LINE_MAX - 1 - l.len - t.len);
    }
    put_bytes(&l, t.buf, t.len);
    put_bytes(&l, "\n", 1);
    return l.len;
}

void log_access_write(const struct log_access *a)
{
    if (access_fd < 0)
        return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    size_t n = log_access_format(a, access_format, &now, line_buf);
    ssize_t w = write(access_fd, line_buf, n);
    (void)w;
}
