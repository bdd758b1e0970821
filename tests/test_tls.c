/*
 * Unit tests for tls: the bound on a session's age. A resumed TLS 1.3
 * session gets a new ticket at each resumption, so only its birth (its
 * full handshake, carried in every ticket) can end it; the clock cannot be
 * moved in an integration test, so the decision is tested here and
 * tests/integration/test_tls.py shows a chain of resumptions still resuming.
 */
#include <check.h>
#include <stdint.h>

#include "check_helpers.h"
#include "tls.h"

START_TEST(a_session_resumes_within_its_lifetime)
{
    int64_t born = 1796000000; /* 2026-11-30 */
    /* What is left is also the renewed ticket's lifetime hint. */
    ck_assert_int_eq(tls_session_left(born, born), TLS_SESSION_LIFETIME_S);
    ck_assert_int_eq(tls_session_left(born, born + 1), TLS_SESSION_LIFETIME_S - 1);
    ck_assert_int_eq(tls_session_left(born, born + TLS_SESSION_LIFETIME_S - 1), 1);
}
END_TEST

START_TEST(a_session_past_its_lifetime_does_not)
{
    int64_t born = 1796000000;
    ck_assert_int_eq(tls_session_left(born, born + TLS_SESSION_LIFETIME_S), 0);
    ck_assert_int_eq(tls_session_left(born, born + TLS_SESSION_LIFETIME_S + 1), 0);
    ck_assert_int_eq(tls_session_left(born, born + 7 * 86400), 0);
    ck_assert_int_eq(tls_session_left(0, born), 0);
    ck_assert_int_eq(tls_session_left(INT64_MIN, INT64_MAX), 0);
}
END_TEST

START_TEST(a_birth_in_the_future_does_not)
{
    /* The clock went back (or a ticket says nonsense): a full handshake. */
    int64_t now = 1796000000;
    ck_assert_int_eq(tls_session_left(now + 1, now), 0);
    ck_assert_int_eq(tls_session_left(INT64_MAX, now), 0);
    ck_assert_int_eq(tls_session_left(now, INT64_MIN), 0);
}
END_TEST

START_TEST(the_lifetime_is_within_rfc_8446)
{
    /* RFC 8446 4.6.1: a ticket lives at most 7 days. */
    ck_assert_int_gt(TLS_SESSION_LIFETIME_S, 0);
    ck_assert_int_le(TLS_SESSION_LIFETIME_S, 7 * 86400);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("session lifetime");
    tcase_add_test(tc, a_session_resumes_within_its_lifetime);
    tcase_add_test(tc, a_session_past_its_lifetime_does_not);
    tcase_add_test(tc, a_birth_in_the_future_does_not);
    tcase_add_test(tc, the_lifetime_is_within_rfc_8446);
    suite_add_tcase(s, tc);
    return check_run(s);
}
