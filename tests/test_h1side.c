/*
 * Unit tests for h1side's dropping of empty lines (CRLF) before a request
 * line: every count of CRLFs, split into chains of every small size, with
 * nothing, a request, or a CR whose LF has not come behind them.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "check_helpers.h"
#include "h1side.h"

/* Appends s[0..n) to in as a chain of its own. */
static void add_chain(struct evbuffer *in, const char *s, size_t n)
{
    struct evbuffer *one = evbuffer_new();
    evbuffer_add(one, s, n);
    evbuffer_add_buffer(in, one);
    evbuffer_free(one);
}

START_TEST(crlfs_dropped_whatever_the_chains)
{
    static const char *const tails[] = {"", "GET / HTTP/1.1\r\n", "\r", "\n", "\rx", "\r\r\n"};
    for (int pairs = 0; pairs <= 24; pairs++) {
        for (size_t chain = 1; chain <= 7; chain++) {
            for (size_t t = 0; t < CHECK_NELEMS(tails); t++) {
                char wire[128];
                size_t n = 0;
                for (int i = 0; i < pairs; i++) {
                    wire[n++] = '\r';
                    wire[n++] = '\n';
                }
                size_t tlen = strlen(tails[t]);
                memcpy(wire + n, tails[t], tlen);
                n += tlen;
                struct evbuffer *in = evbuffer_new();
                for (size_t off = 0; off < n; off += chain)
                    add_chain(in, wire + off, n - off < chain ? n - off : chain);
                bool dropped = h1side_drop_empty_lines(in);
                ck_assert_msg(dropped == (pairs > 0) && evbuffer_get_length(in) == tlen,
                              "%d CRLFs in chains of %zu, then %zu bytes: dropped %d, left %zu",
                              pairs, chain, tlen, dropped, evbuffer_get_length(in));
                char left[32];
                evbuffer_copyout(in, left, tlen);
                ck_assert(memcmp(left, tails[t], tlen) == 0);
                evbuffer_free(in);
            }
        }
    }
}
END_TEST

START_TEST(flood_dropped_in_few_passes)
{
    struct evbuffer *in = evbuffer_new();
    static char crlfs[4096];
    for (size_t i = 0; i < sizeof(crlfs); i += 2)
        memcpy(crlfs + i, "\r\n", 2);
    for (int i = 0; i < 256; i++) /* 1 MiB in 256 chains */
        add_chain(in, crlfs, sizeof(crlfs));
    add_chain(in, "GET", 3);
    ck_assert(h1side_drop_empty_lines(in));
    ck_assert_uint_eq(evbuffer_get_length(in), 3);
    evbuffer_free(in);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("h1side");
    TCase *tc = tcase_create("empty lines");
    tcase_add_test(tc, crlfs_dropped_whatever_the_chains);
    tcase_add_test(tc, flood_dropped_in_few_passes);
    suite_add_tcase(s, tc);
    return check_run(s);
}
