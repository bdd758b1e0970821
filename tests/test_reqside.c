/*
 * Unit tests for the request side's seam: Ferry's own answers leave the
 * transport-independent flow (request.c) through the side's ops only. The
 * side here is an in-memory one with no stream at all (s is NULL: a
 * reach for the client's stream would crash the test), standing in for
 * the HTTP/2 stream a later transport would give.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_helpers.h"
#include "reply.h"
#include "request.h"

/* What the in-memory side was given. */
static struct {
    int answers, heads, continues;
    int status;
    char body[512];
    bool keep_alive, must_close, body_unread;
} seen;
static bool side_keeps; /* the verdict the side returns */

static int mem_write_head(struct request *r, const struct side_head *h)
{
    (void)r;
    seen.heads++;
    seen.status = h->status;
    return 0;
}

static bool mem_answer(struct request *r, const struct reply *rp)
{
    (void)r;
    seen.answers++;
    seen.status = rp->status;
    seen.keep_alive = rp->keep_alive;
    seen.must_close = rp->must_close;
    seen.body_unread = rp->body_unread;
    size_t n = rp->body_len < sizeof(seen.body) - 1 ? rp->body_len : sizeof(seen.body) - 1;
    memcpy(seen.body, rp->body, n);
    seen.body[n] = '\0';
    return side_keeps;
}

static void mem_continue(struct request *r)
{
    (void)r;
    seen.continues++;
}

static bool mem_client_cert(const struct request *r, const char **subject, const char **fingerprint)
{
    (void)r;
    (void)subject;
    (void)fingerprint;
    return false;
}

static void mem_abort(struct request *r)
{
    (void)r;
}

static const struct request_side_ops mem_ops = {
    .write_head = mem_write_head,
    .answer = mem_answer,
    .interim_continue = mem_continue,
    .client_cert = mem_client_cert,
    .abort = mem_abort,
};

/* A request on the in-memory side, as the flow holds it after its head. */
static void setup(struct request_side *side, struct request *r)
{
    memset(&seen, 0, sizeof(seen));
    *side = (struct request_side){.ops = &mem_ops, .s = NULL, .client = "192.0.2.1"};
    memset(r, 0, sizeof(*r));
    r->side = side;
    r->client = NULL;
    r->keep_alive = true;
    r->id = "abc";
    r->id_len = 3;
    r->req_body.done = true;
}

START_TEST(own_answer_goes_through_the_side)
{
    struct request_side side;
    struct request *r = calloc(1, sizeof(*r));
    setup(&side, r);
    side_keeps = true;
    request_answer_json(r, 429, "too many requests", false);
    ck_assert_int_eq(seen.answers, 1);
    ck_assert_int_eq(seen.heads, 0);
    ck_assert_int_eq(seen.status, 429);
    ck_assert_int_eq(r->status, 429);
    ck_assert(seen.keep_alive && !seen.must_close && !seen.body_unread);
    ck_assert_ptr_nonnull(strstr(seen.body, "\"status\":429"));
    ck_assert_ptr_nonnull(strstr(seen.body, "\"request_id\":\"abc\""));
    ck_assert(r->keep_alive); /* the side's verdict is the request's */
    ck_assert(!r->linger);
    free(r);
}
END_TEST

START_TEST(side_verdict_closes)
{
    struct request_side side;
    struct request *r = calloc(1, sizeof(*r));
    setup(&side, r);
    side_keeps = false; /* e.g. a transport that ends the stream anyway */
    request_answer_json(r, 404, "no route", true);
    ck_assert_int_eq(seen.answers, 1);
    ck_assert_int_eq(seen.status, 404);
    ck_assert(seen.must_close);
    ck_assert(!r->keep_alive);
    ck_assert_str_eq(r->error, "no route");
    free(r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("reqside");
    TCase *tc = tcase_create("seam");
    tcase_add_test(tc, own_answer_goes_through_the_side);
    tcase_add_test(tc, side_verdict_closes);
    suite_add_tcase(s, tc);
    return check_run(s);
}
