/*
 * Unit tests for addrset (Check): the set of addresses a DNS name resolves
 * to, a pure module. The TTL clamp to [1 s, 5 min]; sets are sorted and
 * free of duplicates whatever the answer's order; an answer over
 * ADDRSET_MAX keeps the lowest ADDRSET_MAX and says it was truncated; the
 * diff counts addresses added and removed; fe80::/10, and only it, is
 * link-local.
 */
#include <arpa/inet.h>
#include <check.h>
#include <string.h>

#include "addrset.h"
#include "check_helpers.h"

static void add4(struct addrset *s, unsigned a, unsigned b, unsigned c, unsigned d)
{
    uint8_t v[4] = {(uint8_t)a, (uint8_t)b, (uint8_t)c, (uint8_t)d};
    addrset_add(s, 4, v);
}

START_TEST(ttl_clamped)
{
    ck_assert_int_eq(addrset_ttl_ms(-1), 1000);
    ck_assert_int_eq(addrset_ttl_ms(0), 1000);
    ck_assert_int_eq(addrset_ttl_ms(1), 1000);
    ck_assert_int_eq(addrset_ttl_ms(2), 2000);
    ck_assert_int_eq(addrset_ttl_ms(300), 300000);
    ck_assert_int_eq(addrset_ttl_ms(301), 300000);
    ck_assert_int_eq(addrset_ttl_ms(86400 * 365), 300000);
    ck_assert_int_eq(addrset_ttl_ms(INT64_MAX), 300000);
}
END_TEST

START_TEST(order_and_duplicates)
{
    struct addrset a, b;
    addrset_clear(&a);
    addrset_clear(&b);
    add4(&a, 10, 0, 0, 2);
    add4(&a, 10, 0, 0, 1);
    add4(&a, 10, 0, 0, 2);
    add4(&b, 10, 0, 0, 1);
    add4(&b, 10, 0, 0, 2);
    ck_assert_uint_eq(a.n, 2);
    ck_assert(addrset_equal(&a, &b));
    char buf[64];
    addrset_format(&a.a[0], buf, sizeof(buf));
    ck_assert_str_eq(buf, "10.0.0.1");
    uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
    ck_assert(addrset_add(&a, 6, v6));
    ck_assert_uint_eq(a.n, 3);
    addrset_format(&a.a[2], buf, sizeof(buf));
    ck_assert_str_eq(buf, "2001:db8::1"); /* IPv6 after IPv4 */
    ck_assert(!addrset_equal(&a, &b));
}
END_TEST

START_TEST(truncated_keeps_lowest)
{
    struct addrset s;
    addrset_clear(&s);
    bool whole = true;
    /* 500 addresses from a hostile answer, highest first */
    for (int i = 499; i >= 0; i--) {
        uint8_t v[4] = {10, 1, (uint8_t)(i >> 8), (uint8_t)i};
        whole &= addrset_add(&s, 4, v);
    }
    ck_assert(!whole);
    ck_assert_uint_eq(s.n, ADDRSET_MAX);
    for (size_t i = 0; i < s.n; i++) {
        ck_assert_uint_eq(s.a[i].bytes[2], 0);
        ck_assert_uint_eq(s.a[i].bytes[3], i);
    }
    /* the same 64 again: nothing truncated from the kept ones, but the set is full */
    uint8_t low[4] = {10, 1, 0, 5};
    ck_assert(!addrset_add(&s, 4, low) || s.n == ADDRSET_MAX);
    ck_assert_uint_eq(s.n, ADDRSET_MAX);
}
END_TEST

START_TEST(diff_counts)
{
    struct addrset a, b;
    size_t add, rem;
    addrset_clear(&a);
    addrset_clear(&b);
    addrset_diff(&a, &b, &add, &rem);
    ck_assert_uint_eq(add + rem, 0);
    add4(&a, 127, 0, 0, 1);
    add4(&a, 127, 0, 0, 3);
    add4(&b, 127, 0, 0, 2);
    add4(&b, 127, 0, 0, 3);
    add4(&b, 127, 0, 0, 4);
    addrset_diff(&a, &b, &add, &rem);
    ck_assert_uint_eq(add, 2);
    ck_assert_uint_eq(rem, 1);
    addrset_diff(&b, &a, &add, &rem);
    ck_assert_uint_eq(add, 1);
    ck_assert_uint_eq(rem, 2);
    addrset_diff(&b, &b, &add, &rem);
    ck_assert_uint_eq(add + rem, 0);
}
END_TEST

static bool link_local6(const char *text)
{
    uint8_t a[16];
    ck_assert_int_eq(inet_pton(AF_INET6, text, a), 1);
    return addrset_link_local(6, a);
}

START_TEST(link_local_is_fe80_10)
{
    ck_assert(link_local6("fe80::1"));
    ck_assert(link_local6("fe80::21b:aabb:9765:7231"));
    ck_assert(link_local6("febf:ffff::1")); /* the last of fe80::/10 */
    ck_assert(!link_local6("fec0::1"));     /* the old site-local, next to it */
    ck_assert(!link_local6("fe7f::1"));
    ck_assert(!link_local6("::1"));
    ck_assert(!link_local6("2001:db8::1"));
    ck_assert(!link_local6("fd00::1"));
    ck_assert(!link_local6("ff02::1")); /* multicast: not an address of a server either way */
    ck_assert(!link_local6("::ffff:169.254.0.1"));
    uint8_t v4[4] = {0xfe, 0x80, 0, 1}; /* 254.128.0.1: IPv4, not link-local by this test */
    ck_assert(!addrset_link_local(4, v4));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("addrset");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, ttl_clamped);
    tcase_add_test(tc, order_and_duplicates);
    tcase_add_test(tc, truncated_keeps_lowest);
    tcase_add_test(tc, diff_counts);
    tcase_add_test(tc, link_local_is_fe80_10);
    suite_add_tcase(s, tc);
    return check_run(s);
}
