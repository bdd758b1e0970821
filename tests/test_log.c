/* Unit tests for log (Check): per-key rate limiting, access-log lines
 * under long and hostile fields. */
#include <check.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_helpers.h"
#include "log.h"

/* The error log goes to stderr: send it to /dev/null while testing. */
static void quiet(void)
{
    int fd = open("/dev/null", O_WRONLY);
    ck_assert_int_ge(fd, 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
}

START_TEST(ratelimit_per_key)
{
    quiet();
    static struct log_ratelimit rl;
    /* Two servers failing within the interval are both logged... */
    ck_assert(log_ratelimited_key(&rl, "10.0.0.1:80", 60000, LOG_LEVEL_WARN, "a %d", 1));
    ck_assert(log_ratelimited_key(&rl, "10.0.0.2:80", 60000, LOG_LEVEL_WARN, "b %d", 2));
    ck_assert(log_ratelimited_key(&rl, NULL, 60000, LOG_LEVEL_WARN, "no key"));
    /* ...the same one again is not, nor is a NULL key twice. */
    ck_assert(!log_ratelimited_key(&rl, "10.0.0.1:80", 60000, LOG_LEVEL_WARN, "a again"));
    ck_assert(!log_ratelimited_key(&rl, "10.0.0.2:80", 60000, LOG_LEVEL_WARN, "b again"));
    ck_assert(!log_ratelimited_key(&rl, NULL, 60000, LOG_LEVEL_WARN, "no key again"));
    /* Many distinct keys (more than the slots) are each logged once: a
     * shared slot lets lines through, it never hides a new key's. */
    char key[32];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "server-%d", i);
        ck_assert_msg(log_ratelimited_key(&rl, key, 60000, LOG_LEVEL_WARN, "%s", key),
                      "first line of %s hidden", key);
    }
    /* A zero interval never suppresses. */
    ck_assert(log_ratelimited_key(&rl, "z", 0, LOG_LEVEL_WARN, "z"));
    ck_assert(log_ratelimited_key(&rl, "z", 0, LOG_LEVEL_WARN, "z"));
}
END_TEST

START_TEST(ratelimit_interval_passes)
{
    quiet();
    static struct log_ratelimit rl;
    ck_assert(log_ratelimited_key(&rl, "k", 50, LOG_LEVEL_WARN, "first"));
    ck_assert(!log_ratelimited_key(&rl, "k", 50, LOG_LEVEL_WARN, "dropped"));
    usleep(120 * 1000);
    ck_assert(log_ratelimited_key(&rl, "k", 50, LOG_LEVEL_WARN, "after the interval"));
}
END_TEST

static struct log_ratelimit shared_rl;
static int written[4];

static void *thread_logs(void *arg)
{
    int t = (int)(long)arg;
    for (int i = 0; i < 1000; i++)
        written[t] += log_ratelimited_key(&shared_rl, "same", 60000, LOG_LEVEL_WARN, "t%d", t);
    return NULL;
}

START_TEST(ratelimit_across_threads)
{
    quiet();
    pthread_t th[4];
    for (long i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, thread_logs, (void *)i), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    /* One key, one line for every thread together (a race may let a
     * second through; never one per thread per call). */
    int total = written[0] + written[1] + written[2] + written[3];
    ck_assert_int_ge(total, 1);
    ck_assert_int_le(total, 4);
}
END_TEST

/* Is line[0..n) one JSON-safe line: printable ASCII, a newline at the end
 * only, every backslash starting a known escape, quotes balanced? */
static void check_json_line(const char *line, size_t n)
{
    ck_assert_uint_le(n, LOG_LINE_MAX);
    ck_assert_uint_gt(n, 0);
    ck_assert_int_eq(line[n - 1], '\n');
    ck_assert_int_eq(line[0], '{');
    ck_assert_int_eq(line[n - 2], '}');
    /* Plain ifs per byte: Check's asserts each write a mark point. */
    bool in_str = false;
    for (size_t i = 0; i < n - 1; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 0x20 || c >= 0x7f)
            ck_abort_msg("byte 0x%02x at %zu", c, i);
        if (!in_str) {
            in_str = c == '"';
            continue;
        }
        if (c == '"') {
            in_str = false;
        } else if (c == '\\') {
            char e = line[++i];
            if (e == 'u') {
                if (i + 4 >= n - 1 || strncmp(line + i + 1, "00", 2) != 0)
                    ck_abort_msg("cut \\u escape at %zu", i);
                i += 4;
            } else if (e != '"' && e != '\\') {
                ck_abort_msg("bad escape \\%c at %zu", e, i);
            }
        }
    }
    ck_assert_msg(!in_str, "unterminated string");
}

START_TEST(access_json_any_bytes)
{
    /* Every length around the cut, with every kind of escape at the cut. */
    static char path[3 * LOG_LINE_MAX], line[LOG_LINE_MAX + 1];
    const char *fill[] = {"x", "\"", "\\", "\x01", "\xe9"};
    struct timespec now = {1700000000, 123000000};
    for (size_t f = 0; f < sizeof(fill) / sizeof(fill[0]); f++) {
        for (size_t len = 0; len < sizeof(path); len += (len < 4400 ? 1 : 97)) {
            memset(path, 'a', len);
            for (size_t i = 0; i < len; i += 3)
                path[i] = fill[f][0];
            struct log_access a = {.client = "192.0.2.1",
                                   .method = "G\"E\\T",
                                   .method_len = 5,
                                   .host = "h\xff",
                                   .host_len = 2,
                                   .path = path,
                                   .path_len = len,
                                   .status = 200,
                                   .route = "r",
                                   .request_id = "id",
                                   .request_id_len = 2,
                                   .upstream_connect_ms = -1,
                                   .upstream_header_ms = -1,
                                   .error = "e\"rr"};
            size_t n = log_access_format(&a, LOG_FORMAT_JSON, &now, line);
            check_json_line(line, n);
            line[n] = '\0';
            ck_assert_ptr_nonnull(strstr(line, "\"status\":200"));
            ck_assert_ptr_nonnull(strstr(line, "\"request_id\":\"id\""));
            bool cut = strstr(line, LOG_TRUNCATED "\",\"status\"") != NULL;
            if (len >= LOG_LINE_MAX)
                ck_assert_msg(cut, "len %zu: no marker", len);
            else if (len < 1000)
                ck_assert_msg(!cut, "len %zu: cut", len);
        }
    }
}
END_TEST

START_TEST(access_combined_escapes)
{
    static char path[2 * LOG_LINE_MAX], line[LOG_LINE_MAX + 1];
    struct timespec now = {1700000000, 0};
    struct log_access a = {.client = "192.0.2.1",
                           .method = "GET",
                           .method_len = 3,
                           .path = "/a\"b\\c\x01\xff",
                           .path_len = 8,
                           .status = 404,
                           .bytes_sent = 7};
    size_t n = log_access_format(&a, LOG_FORMAT_COMBINED, &now, line);
    line[n] = '\0';
    ck_assert_str_eq(line, "192.0.2.1 - - [14/Nov/2023:22:13:20 +0000] "
                           "\"GET /a\\x22b\\x5Cc\\x01\\xFF HTTP/1.1\" 404 7 \"-\" \"-\"\n");
    for (size_t len = LOG_LINE_MAX - 200; len < sizeof(path); len++) {
        memset(path, '"', len);
        a.path = path;
        a.path_len = len;
        n = log_access_format(&a, LOG_FORMAT_COMBINED, &now, line);
        ck_assert_uint_le(n, LOG_LINE_MAX);
        ck_assert_int_eq(line[n - 1], '\n');
        line[n] = '\0';
        /* Cut between escapes: the path is \x22 repeated, then the marker. */
        const char *p = strstr(line, "\"GET ") + 5;
        while (strncmp(p, "\\x22", 4) == 0)
            p += 4;
        ck_assert_msg(strncmp(p, LOG_TRUNCATED " HTTP/1.1\" 404 7", 18) == 0 ||
                          strncmp(p, " HTTP/1.1\" 404 7", 15) == 0,
                      "len %zu: %s", len, p);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, ratelimit_per_key);
    tcase_add_test(tc, ratelimit_interval_passes);
    tcase_add_test(tc, ratelimit_across_threads);
    tcase_add_test(tc, access_json_any_bytes);
    tcase_add_test(tc, access_combined_escapes);
    suite_add_tcase(s, tc);
    return check_run(s);
}
