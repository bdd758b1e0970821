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

static enum config_log_level min_level = CONFIG_LOG_INFO;
static enum config_log_format access_format = CONFIG_LOG_JSON;
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

int log_init(enum config_log_level level, const struct config_access_log *access)
{
    min_level = level;
    access_format = access->format;
    if (!access->path) {
        access_fd = -1;
        return 0;
    }
    int fd = open_access(access->path);
    if (fd < 0)
        return fd;
    access_path = strdup(access->path);
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

static void vlog(enum config_log_level level, const char *fmt, va_list ap)
{
    char line[1024];
    int n = snprintf(line, sizeof(line), "ferry: %s: ", level_name[level]);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void log_msg(enum config_log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

bool log_ratelimited(int64_t *last, int64_t interval_ms, enum config_log_level level,
                     const char *fmt, ...)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    int64_t prev = __atomic_load_n(last, __ATOMIC_RELAXED);
    if (prev != 0 && now - prev < interval_ms)
        return false;
    __atomic_store_n(last, now, __ATOMIC_RELAXED);
    if (level < min_level)
        return false;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
    return true;
}

bool log_access_enabled(void)
{
    return access_fd >= 0;
}

static size_t put_raw(char *buf, size_t pos, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static size_t put_raw(char *buf, size_t pos, size_t cap, const char *fmt, ...)
{
    if (pos >= cap)
        return pos;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + pos, cap - pos, fmt, ap);
    va_end(ap);
    if (n < 0)
        return pos;
    return pos + (size_t)n < cap ? pos + (size_t)n : cap - 1;
}

/* Appends s[0..len) as a JSON string (null for NULL) to buf. */
static size_t put_json(char *buf, size_t pos, size_t cap, const char *s, size_t len)
{
    if (!s)
        return put_raw(buf, pos, cap, "null");
    if (pos + 2 >= cap)
        return pos;
    buf[pos++] = '"';
    for (size_t i = 0; i < len && pos + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf[pos++] = '\\';
            buf[pos++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            pos += (size_t)snprintf(buf + pos, cap - pos, "\\u%04x", c);
        } else {
            buf[pos++] = (char)c;
        }
    }
    if (pos < cap)
        buf[pos++] = '"';
    return pos;
}

static size_t slen(const char *s)
{
    return s ? strlen(s) : 0;
}

void log_access_write(const struct log_access *a)
{
    if (access_fd < 0)
        return;
    char buf[3072];
    size_t cap = sizeof(buf) - 1, p = 0;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    char when[40];
    if (access_format == CONFIG_LOG_COMBINED) {
        strftime(when, sizeof(when), "%d/%b/%Y:%H:%M:%S +0000", &tm);
        p = put_raw(buf, p, cap, "%s - - [%s] \"%.*s %.*s HTTP/1.1\" %d %llu \"-\" \"-\"",
                    a->client ? a->client : "-", when, (int)a->method_len,
                    a->method ? a->method : "-", (int)a->path_len, a->path ? a->path : "-",
                    a->status, (unsigned long long)a->bytes_sent);
    } else {
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
        p = put_raw(buf, p, cap, "{\"time\":\"%s.%03ldZ\",\"client\":", when,
                    now.tv_nsec / 1000000);
        p = put_json(buf, p, cap, a->client, slen(a->client));
        p = put_raw(buf, p, cap, ",\"method\":");
        p = put_json(buf, p, cap, a->method, a->method_len);
        p = put_raw(buf, p, cap, ",\"host\":");
        p = put_json(buf, p, cap, a->host, a->host_len);
        p = put_raw(buf, p, cap, ",\"path\":");
        p = put_json(buf, p, cap, a->path, a->path_len);
        p = put_raw(buf, p, cap, ",\"status\":%d,\"bytes\":%llu,\"bytes_received\":%llu,\"route\":",
                    a->status, (unsigned long long)a->bytes_sent,
                    (unsigned long long)a->bytes_received);
        p = put_json(buf, p, cap, a->route, slen(a->route));
        p = put_raw(buf, p, cap, ",\"upstream\":");
        p = put_json(buf, p, cap, a->upstream_server, slen(a->upstream_server));
        p = put_raw(buf, p, cap, ",\"upstream_name\":");
        p = put_json(buf, p, cap, a->upstream, slen(a->upstream));
        if (a->upstream_status)
            p = put_raw(buf, p, cap, ",\"upstream_status\":%d", a->upstream_status);
        else
            p = put_raw(buf, p, cap, ",\"upstream_status\":null");
        if (a->upstream_retries)
            p = put_raw(buf, p, cap, ",\"upstream_retries\":%u", a->upstream_retries);
        p = put_raw(buf, p, cap, ",\"request_id\":");
        p = put_json(buf, p, cap, a->request_id, a->request_id_len);
        p = put_raw(buf, p, cap, ",\"duration_ms\":%.3f", a->duration_ms);
        if (a->upstream_connect_ms >= 0)
            p = put_raw(buf, p, cap, ",\"upstream_connect_ms\":%.3f", a->upstream_connect_ms);
        if (a->upstream_header_ms >= 0)
            p = put_raw(buf, p, cap, ",\"upstream_header_ms\":%.3f", a->upstream_header_ms);
        if (a->error) {
            p = put_raw(buf, p, cap, ",\"error\":");
            p = put_json(buf, p, cap, a->error, strlen(a->error));
        }
        p = put_raw(buf, p, cap, "}");
    }
    buf[p++] = '\n';
    ssize_t w = write(access_fd, buf, p);
    (void)w;
}
