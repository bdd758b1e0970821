/*
 * Unit tests for reply: the one writer of Ferry's own answers and the one
 * rule deciding whether a connection carries another request.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "check_helpers.h"
#include "config.h"
#include "http1.h"
#include "reply.h"

/* The answer rp as text (NUL-terminated, caller frees); *keep: the verdict. */
static char *write_text(const struct reply *rp, bool *keep)
{
    struct evbuffer *out = evbuffer_new();
    *keep = reply_write(out, rp);
    size_t n = evbuffer_get_length(out);
    char *s = malloc(n + 1);
    evbuffer_copyout(out, s, n);
    s[n] = '\0';
    evbuffer_free(out);
    return s;
}

START_TEST(unread_body_always_closes)
{
    ck_assert(reply_keeps(true, false, false));
    ck_assert(!reply_keeps(true, false, true));
    ck_assert(!reply_keeps(true, true, false));
    ck_assert(!reply_keeps(false, false, false));
    for (int status = 200; status < 600; status += 101) {
        struct reply rp = {
            .status = status, .body = "x", .body_len = 1, .keep_alive = true, .body_unread = true};
        bool keep;
        char *s = write_text(&rp, &keep);
        ck_assert(!keep);
        ck_assert_ptr_nonnull(strstr(s, "\r\nConnection: close\r\n"));
        free(s);
    }
}
END_TEST

START_TEST(error_answer_head_and_body)
{
    char body[256];
    size_t n = reply_error_json(body, sizeof(body), 503, "no slot", "abc", 3);
    ck_assert_str_eq(body, "{\"error\":\"no slot\",\"status\":503,\"request_id\":\"abc\"}\n");
    struct reply rp = {.status = 503,
                       .content_type = "application/json",
                       .body = body,
                       .body_len = n,
                       .request_id = "abc",
                       .request_id_len = 3,
                       .retry_after = true,
                       .keep_alive = true};
    bool keep;
    char *s = write_text(&rp, &keep);
    ck_assert(keep);
    ck_assert_ptr_eq(strstr(s, "Connection:"), NULL);
    const char *line = "HTTP/1.1 503 Service Unavailable\r\n";
    ck_assert(strncmp(s, line, strlen(line)) == 0);
    ck_assert_ptr_nonnull(strstr(s, "\r\nContent-Type: application/json\r\n"));
    ck_assert_ptr_nonnull(strstr(s, "\r\nX-Request-Id: abc\r\n"));
    ck_assert_ptr_nonnull(strstr(s, "\r\nRetry-After: 1\r\n"));
    ck_assert_ptr_nonnull(strstr(s, "\r\nContent-Length: 52\r\n"));
    const char *end = strstr(s, "\r\n\r\n");
    ck_assert_ptr_nonnull(end);
    ck_assert_str_eq(end + 4, body);
    free(s);
}
END_TEST

START_TEST(head_and_bodiless_statuses)
{
    struct reply rp = {
        .status = 200, .body = "hello", .body_len = 5, .head_only = true, .keep_alive = true};
    bool keep;
    char *s = write_text(&rp, &keep);
    ck_assert_ptr_nonnull(strstr(s, "Content-Length: 5\r\n"));
    ck_assert(strlen(strstr(s, "\r\n\r\n")) == 4); /* no body after the head */
    free(s);
    rp.head_only = false;
    rp.status = 204;
    s = write_text(&rp, &keep);
    ck_assert_ptr_eq(strstr(s, "Content-Length"), NULL);
    ck_assert(strlen(strstr(s, "\r\n\r\n")) == 4);
    free(s);
}
END_TEST

START_TEST(route_rules_replace_ferrys_fields)
{
    struct http1_header set[] = {{"Content-Type", 12, "text/x-ours", 11}};
    struct http1_header add[] = {{"X-Extra", 7, "1", 1}};
    struct http1_header rm[] = {{"X-Request-Id", 12, "", 0}};
    struct config_header_rules rules = {
        .set = set, .nset = 1, .add = add, .nadd = 1, .remove = rm, .nremove = 1};
    struct reply rp = {.status = 200,
                       .content_type = "text/plain",
                       .body = "ok",
                       .body_len = 2,
                       .request_id = "abc",
                       .request_id_len = 3,
                       .rules = &rules,
                       .keep_alive = true};
    bool keep;
    char *s = write_text(&rp, &keep);
    ck_assert_ptr_eq(strstr(s, "text/plain"), NULL);
    ck_assert_ptr_nonnull(strstr(s, "\r\nContent-Type: text/x-ours\r\n"));
    ck_assert_ptr_nonnull(strstr(s, "\r\nX-Extra: 1\r\n"));
    ck_assert_ptr_eq(strstr(s, "X-Request-Id"), NULL);
    free(s);
}
END_TEST

START_TEST(continue_is_a_bare_interim_head)
{
    struct evbuffer *out = evbuffer_new();
    reply_continue(out);
    char buf[64] = {0};
    evbuffer_copyout(out, buf, sizeof(buf) - 1);
    ck_assert_str_eq(buf, "HTTP/1.1 100 Continue\r\n\r\n");
    evbuffer_free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("reply");
    TCase *tc = tcase_create("answers");
    tcase_add_test(tc, unread_body_always_closes);
    tcase_add_test(tc, error_answer_head_and_body);
    tcase_add_test(tc, head_and_bodiless_statuses);
    tcase_add_test(tc, route_rules_replace_ferrys_fields);
    tcase_add_test(tc, continue_is_a_bare_interim_head);
    suite_add_tcase(s, tc);
    return check_run(s);
}
