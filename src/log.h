/*
 * log: the error log (levels, to stderr: the journal under systemd) and the
 * access log (one line per request, JSON or combined, to stderr or a file).
 *
 * Thread-safe: each line is formatted into a per-thread buffer and written
 * with one write(2), so lines of different workers never interleave (an
 * access-log line is at most LOG_LINE_MAX = PIPE_BUF bytes, the size a
 * pipe writes atomically). Nothing here yields, and writing a line
 * allocates nothing. Depends on nothing of Ferry's: every layer may log.
 *
 * Access-log lines are well-formed whatever the request (docs/proxy.md):
 * - json: one object per line, ASCII only; bytes outside printable ASCII
 *   are \u00XX (read as Latin-1), '"' and '\\' are escaped.
 * - combined: the path and method are escaped as nginx escapes its log
 *   variables: '"', '\\', bytes below 0x20 and above 0x7e become \xXX.
 * - A field longer than its share of the line is cut at a character
 *   boundary (never inside an escape) and ends with LOG_TRUNCATED; the
 *   path gets whatever the other, small fields leave of the line.
 */
#ifndef FERRY_LOG_H
#define FERRY_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum log_level {
    LOG_LEVEL_DEBUG,
    LOG_LEVEL_INFO,
    LOG_LEVEL_WARN,
    LOG_LEVEL_ERROR,
};

enum log_format {
    LOG_FORMAT_JSON,
    LOG_FORMAT_COMBINED,
};

#define LOG_LINE_MAX 4096   /* PIPE_BUF: one access-log line, newline included */
#define LOG_TRUNCATED "..." /* ends a field cut to fit the line */

/* Sets the level and opens the access log: access_path NULL = off,
 * "stderr", or a file. Returns 0 or -errno (the file could not be opened). */
int log_init(enum log_level level, enum log_format format, const char *access_path);
/* Reopens the access log file (SIGUSR1, rotation). */
int log_reopen(void);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

/*
 * Logs at most once per interval_ms for one call site: `last` is the
 * caller's static timestamp (CLOCK_MONOTONIC ms; races between threads only
 * let an extra line through). Returns true when the line was written.
 * Every line of the site counts, whatever it is about: for a site that
 * logs about several servers or upstreams, use log_ratelimited_key.
 */
bool log_ratelimited(int64_t *last, int64_t interval_ms, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * A call site's state for log_ratelimited_key: the last line's time per
 * key, in LOG_RATELIMIT_SLOTS slots chosen by a hash of the key. Declare
 * it static and zeroed at the call site; threads share it (lock-free).
 */
#define LOG_RATELIMIT_SLOTS 16
struct log_ratelimit {
    uint64_t slot[LOG_RATELIMIT_SLOTS];       /* key hash << 32 | ms, 0 = empty */
    uint32_t suppressed[LOG_RATELIMIT_SLOTS]; /* lines dropped since the last */
};

/*
 * Logs at most once per interval_ms per key (a server address, an upstream
 * name; NULL is a key of its own) at this call site, for every thread
 * together: a second server failing within the interval is logged, the
 * same server failing again on another worker is not. Two keys sharing a
 * slot only let extra lines through, never hide one. A line written after
 * some were dropped says how many ("(N more suppressed)", approximate
 * under races). Returns true when the line was written.
 */
bool log_ratelimited_key(struct log_ratelimit *rl, const char *key, int64_t interval_ms,
                         enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* One request, as the access log records it. Strings may be NULL. */
struct log_access {
    const char *client;
    const char *method;
    size_t method_len;
    const char *host;
    size_t host_len;
    const char *path;
    size_t path_len;
    int status;
    uint64_t bytes_sent;     /* response body bytes sent to the client */
    uint64_t bytes_received; /* request body bytes read from the client */
    const char *route;
    const char *upstream;        /* upstream name */
    const char *upstream_server; /* address text */
    int upstream_status;         /* 0 = no response */
    unsigned upstream_retries;   /* tries on other servers before the last */
    const char *request_id;
    size_t request_id_len;
    double duration_ms;
    double upstream_connect_ms; /* -1 = not measured */
    double upstream_header_ms;  /* -1 = not measured */
    const char *error;          /* why Ferry answered itself, NULL otherwise */
    /* The verified TLS client certificate (NULL: none), JSON format only */
    const char *tls_client_subject;
    const char *tls_client_fingerprint;
    const char *identity; /* who the route's auth found, NULL: none */
};

bool log_access_enabled(void);
void log_access_write(const struct log_access *a);
/* The line log_access_write writes (newline included) for a request
 * logged at `now` (CLOCK_REALTIME), into out[LOG_LINE_MAX]; returns its
 * length. For tests. */
size_t log_access_format(const struct log_access *a, enum log_format format,
                         const struct timespec *now, char *out);

#endif
