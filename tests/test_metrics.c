/*
 * Unit tests for metrics (Check): a label value of the text format 0.0.4
 * escapes backslash, double quote and newline (as \\, \" and \n) and
 * nothing else, so a route or server name can never end its label or its
 * line early.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "check_helpers.h"
#include "metrics.h"

/* s as metrics_label_value writes it (a NUL-terminated copy, freed by
 * the caller). */
static char *label(const char *s)
{
    struct evbuffer *b = evbuffer_new();
    ck_assert_ptr_nonnull(b);
    metrics_label_value(b, s);
    size_t n = evbuffer_get_length(b);
    char *text = malloc(n + 1);
    ck_assert_ptr_nonnull(text);
    evbuffer_remove(b, text, n);
    text[n] = '\0';
    evbuffer_free(b);
    return text;
}

static const struct {
    const char *in, *out;
} CASES[] = {
    {"", ""},
    {"api", "api"},
    {"api.internal:8080@[::1]", "api.internal:8080@[::1]"},
    {"a\\b", "a\\\\b"},
    {"say \"hi\"", "say \\\"hi\\\""},
    {"one\ntwo", "one\\ntwo"},
    {"\\\"\n", "\\\\\\\"\\n"},
    {"\\n", "\\\\n"},                            /* a backslash then n: not a newline */
    {"} 1\nfake_total 9", "} 1\\nfake_total 9"}, /* cannot start a sample */
    {"tab\there\rcr", "tab\there\rcr"},          /* the format escapes nothing else */
    {"caf\xc3\xa9", "caf\xc3\xa9"},              /* UTF-8 as it is */
};

START_TEST(label_value_escaped)
{
    char *got = label(CASES[_i].in);
    ck_assert_msg(strcmp(got, CASES[_i].out) == 0, "case %d: got \"%s\", want \"%s\"", _i, got,
                  CASES[_i].out);
    free(got);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("core");
    tcase_add_loop_test(tc, label_value_escaped, 0, (int)CHECK_NELEMS(CASES));
    suite_add_tcase(s, tc);
    return check_run(s);
}
