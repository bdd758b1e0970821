/*
 * log: the error log (levels, to stderr: the journal under systemd) and the
 * access log (one line per request, JSON or combined, to stderr or a file).
 *
 * Thread-safe: each line is formatted into a local buffer and written with
 * one write(2), so lines of different workers never interleave. Nothing
 * here yields. Calls: config (levels, formats) only.
 */
#ifndef FERRY_LOG_H
#define FERRY_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

/* Sets the level and opens the access log (stderr, a file, or off).
 * Returns 0 or -errno (the file could not be opened). */
int log_init(enum config_log_level level, const struct config_access_log *access);
/* Reopens the access log file (SIGUSR1, rotation). */
int log_reopen(void);

void log_msg(enum config_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#define log_debug(...) log_msg(CONFIG_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(CONFIG_LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(CONFIG_LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(CONFIG_LOG_ERROR, __VA_ARGS__)

/*
 * Logs at most once per interval_ms for one call site: `last` is the
 * caller's static timestamp (CLOCK_MONOTONIC ms; races between threads only
 * let an extra line through). Returns true when the line was written.
 */
bool log_ratelimited(int64_t *last, int64_t interval_ms, enum config_log_level level,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

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
    uint64_t bytes_sent; /* response body bytes sent to the client */
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
};

bool log_access_enabled(void);
void log_access_write(const struct log_access *a);

#endif
