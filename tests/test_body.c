/*
 * Unit tests for body: the body mover (Content-Length, chunked re-encoded
 * as whole chunks, close-delimited), fed byte by byte and in one piece,
 * and body_copy (the replay of a body for a retry).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "check_helpers.h"
#include "body.h"

/* Feeds wire[0..len) to body_move `step` bytes at a time; returns the
 * last result and leaves what came out in out (a NUL-terminated copy in
 * text). */
static int feed(struct body *b, const char *wire, size_t len, size_t step, struct evbuffer *in,
                struct evbuffer *out, char *text, size_t cap)
{
    int rc = 0;
    for (size_t off = 0; off < len && rc == 0; off += step) {
        size_t n = len - off < step ? len - off : step;
        evbuffer_add(in, wire + off, n);
        rc = body_move(b, in, out);
    }
    size_t got = evbuffer_get_length(out);
    ck_assert_uint_lt(got, cap);
    evbuffer_copyout(out, text, got);
    text[got] = '\0';
    return rc;
}

START_TEST(length_moves_exactly_its_bytes)
{
    for (size_t step = 1; step <= 16; step += 15) {
        struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
        struct body b;
        char text[64];
        body_init(&b, HTTP1_BODY_LENGTH, 5, false, 0);
        const char *wire = "helloGET / HTTP/1.1\r\n\r\n";
        ck_assert_int_eq(feed(&b, wire, strlen(wire), step, in, out, text, sizeof(text)), 0);
        ck_assert(b.done);
        ck_assert_str_eq(text, "hello");
        ck_assert_uint_eq(b.bytes, 5);
        /* what follows the body is left for the next request */
        ck_assert_uint_eq(evbuffer_get_length(in), strlen(wire) - 5);
        evbuffer_free(in);
        evbuffer_free(out);
    }
}
END_TEST

START_TEST(chunked_is_reencoded_as_whole_chunks)
{
    const char *wire = "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    for (size_t step = 1; step <= 64; step += 63) {
        struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
        struct body b;
        char text[128];
        body_init(&b, HTTP1_BODY_CHUNKED, 0, true, 0);
        ck_assert_int_eq(feed(&b, wire, strlen(wire), step, in, out, text, sizeof(text)), 0);
        ck_assert(b.done);
        ck_assert_uint_eq(b.bytes, 11);
        /* every piece is its own whole chunk: a prefix of the output, cut
         * after any piece, is a valid chunked stream without its end */
        char *p = text;
        size_t payload = 0;
        while (strncmp(p, "0\r\n\r\n", 5) != 0) {
            char *end;
            unsigned long n = strtoul(p, &end, 16);
            ck_assert(n > 0 && end[0] == '\r' && end[1] == '\n');
            ck_assert(end[2 + n] == '\r' && end[3 + n] == '\n');
            payload += n;
            p = end + 4 + n;
        }
        ck_assert_uint_eq(payload, 11);
        ck_assert_str_eq(p, "0\r\n\r\n");
        ck_assert_uint_eq(evbuffer_get_length(in), 4); /* "NEXT" */
        evbuffer_free(in);
        evbuffer_free(out);
    }
}
END_TEST

START_TEST(chunked_errors_and_limit)
{
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    struct body b;
    char text[64];
    body_init(&b, HTTP1_BODY_CHUNKED, 0, true, 0);
    ck_assert_int_lt(feed(&b, "zz\r\nhello\r\n", 11, 64, in, out, text, sizeof(text)), 0);
    evbuffer_drain(in, evbuffer_get_length(in));
    evbuffer_drain(out, evbuffer_get_length(out));
    body_init(&b, HTTP1_BODY_CHUNKED, 0, true, 4);
    ck_assert_int_eq(feed(&b, "5\r\nhello\r\n0\r\n\r\n", 15, 64, in, out, text, sizeof(text)),
                     HTTP1_E_BODY_TOO_LARGE);
    ck_assert(!b.done);
    evbuffer_free(in);
    evbuffer_free(out);
}
END_TEST

/* An out that refuses bytes (a stream's frozen stand-in after an
 * allocation failure): the body fails and counts nothing it did not move. */
START_TEST(refused_move_fails_and_counts_nothing)
{
    static const struct {
        enum http1_body framing;
        const char *wire;
    } cases[] = {
        {HTTP1_BODY_LENGTH, "hello"},
        {HTTP1_BODY_CHUNKED, "5\r\nhello\r\n0\r\n\r\n"},
        {HTTP1_BODY_CLOSE, "hello"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
        struct body b;
        body_init(&b, cases[i].framing, 5, false, 0);
        evbuffer_add(in, cases[i].wire, strlen(cases[i].wire));
        evbuffer_freeze(out, 0);
        ck_assert_int_eq(body_move(&b, in, out), HTTP1_E_NOMEM);
        ck_assert_uint_eq(b.bytes, 0);
        ck_assert(!b.done);
        ck_assert_uint_ge(evbuffer_get_length(in), 5); /* the payload stays unread */
        evbuffer_free(in);
        evbuffer_free(out);
    }
}
END_TEST

/* libevent's allocator, failing while fail_allocs is set. */
static bool fail_allocs;

static void *failing_malloc(size_t n)
{
    return fail_allocs ? NULL : malloc(n);
}

static void *failing_realloc(void *p, size_t n)
{
    return fail_allocs ? NULL : realloc(p, n);
}

/* Appends s to in as a chain of its own (with room to spare): a move of
 * exactly its bytes relinks the chain and allocates nothing. */
static void add_chain(struct evbuffer *in, const char *s)
{
    struct evbuffer *one = evbuffer_new();
    evbuffer_add(one, s, strlen(s));
    evbuffer_add_buffer(in, one);
    evbuffer_free(one);
}

/* Out of memory for a chunk line while the payload itself could still be
 * moved (whole chains change hands without an allocation): the payload
 * must not go out without its framing, where the receiver would read the
 * sender's bytes as chunk lines (here: the body's end, then a request). */
START_TEST(refused_chunk_line_moves_nothing)
{
    static const char smuggled[] = "0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
    for (int close_delimited = 0; close_delimited <= 1; close_delimited++) {
        struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
        struct body b;
        if (close_delimited) {
            body_init(&b, HTTP1_BODY_CLOSE, 0, true, 0);
        } else {
            char line[16];
            snprintf(line, sizeof(line), "%zx\r\n", strlen(smuggled));
            add_chain(in, line);
            body_init(&b, HTTP1_BODY_CHUNKED, 0, true, 0);
        }
        add_chain(in, smuggled);
        if (!close_delimited)
            add_chain(in, "\r\n0\r\n\r\n");
        event_set_mem_functions(failing_malloc, failing_realloc, free);
        fail_allocs = true;
        int rc = body_move(&b, in, out);
        fail_allocs = false;
        event_set_mem_functions(NULL, NULL, NULL);
        ck_assert_int_eq(rc, HTTP1_E_NOMEM);
        ck_assert(!b.done);
        ck_assert_uint_eq(b.bytes, 0);
        ck_assert_uint_eq(evbuffer_get_length(out), 0); /* no payload without its chunk line */
        evbuffer_free(in);
        evbuffer_free(out);
    }
}
END_TEST

/* The same for the last chunk that ends a close-delimited body sent on
 * as chunked: without it the body must not count as done (the answer
 * would pass for a whole one, and the next answer's bytes be read as its
 * chunk lines). */
START_TEST(refused_last_chunk_is_not_an_end)
{
    struct evbuffer *out = evbuffer_new();
    struct body b;
    body_init(&b, HTTP1_BODY_CLOSE, 0, true, 0);
    event_set_mem_functions(failing_malloc, failing_realloc, free);
    fail_allocs = true;
    int rc = body_close_end(&b, out);
    fail_allocs = false;
    event_set_mem_functions(NULL, NULL, NULL);
    ck_assert_int_eq(rc, HTTP1_E_NOMEM);
    ck_assert(!b.done);
    ck_assert_int_eq(body_close_end(&b, out), 0);
    ck_assert(b.done);
    ck_assert_uint_eq(evbuffer_get_length(out), 5); /* "0\r\n\r\n" */
    evbuffer_free(out);
}
END_TEST

START_TEST(empty_bodies_are_done_at_once)
{
    struct body b;
    body_init(&b, HTTP1_BODY_NONE, 0, false, 0);
    ck_assert(b.done);
    body_init(&b, HTTP1_BODY_LENGTH, 0, false, 0);
    ck_assert(b.done);
    body_init(&b, HTTP1_BODY_CHUNKED, 0, true, 0);
    ck_assert(!b.done);
}
END_TEST

START_TEST(copy_leaves_the_source)
{
    struct evbuffer *src = evbuffer_new(), *dst = evbuffer_new();
    static char big[100000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)(i * 7);
    for (size_t off = 0; off < sizeof(big); off += 1000)
        evbuffer_add(src, big + off, 1000); /* many chains */
    evbuffer_add(dst, "HEAD", 4);
    ck_assert_int_eq(body_copy(dst, src), 0);
    ck_assert_int_eq(body_copy(dst, src), 0);
    ck_assert_uint_eq(evbuffer_get_length(src), sizeof(big));
    ck_assert_uint_eq(evbuffer_get_length(dst), 4 + 2 * sizeof(big));
    unsigned char *p = evbuffer_pullup(dst, -1);
    ck_assert(memcmp(p + 4, big, sizeof(big)) == 0);
    ck_assert(memcmp(p + 4 + sizeof(big), big, sizeof(big)) == 0);
    evbuffer_free(src);
    evbuffer_free(dst);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("body");
    TCase *tc = tcase_create("move");
    tcase_add_test(tc, length_moves_exactly_its_bytes);
    tcase_add_test(tc, chunked_is_reencoded_as_whole_chunks);
    tcase_add_test(tc, chunked_errors_and_limit);
    tcase_add_test(tc, refused_move_fails_and_counts_nothing);
    tcase_add_test(tc, refused_chunk_line_moves_nothing);
    tcase_add_test(tc, refused_last_chunk_is_not_an_end);
    tcase_add_test(tc, empty_bodies_are_done_at_once);
    tcase_add_test(tc, copy_leaves_the_source);
    suite_add_tcase(s, tc);
    return check_run(s);
}
