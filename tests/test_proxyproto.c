/*
 * Unit tests for proxyproto (Check), table-driven: accepted and rejected
 * v1 and v2 headers; for every case, each prefix answers INCOMPLETE or the
 * whole input's answer (so any split of the header across reads gives the
 * same result), and bytes after a header do not change it.
 */
#include <arpa/inet.h>
#include <check.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_helpers.h"
#include "proxyproto.h"

#define V2SIG "\r\n\r\n\0\r\nQUIT\n"
/* want for an accepted case: the whole input is the header */
#define ALL SSIZE_MAX
/* the unused fields of a rejected case */
#define REJECT false, NULL, 0, NULL, 0
#define B(s) (const uint8_t *)(s), sizeof(s) - 1

struct pcase {
    const char *name;
    const uint8_t *in;
    size_t len;
    ssize_t want; /* ALL: accepted, the whole input; else the error */
    bool local;
    const char *src; /* expected source address (accepted, not local) */
    unsigned sport;
    const char *dst;
    unsigned dport;
};

/* clang-format off */
static const struct pcase cases[] = {
    /* ---- v1 accepted ---- */
    {"v1 tcp4", B("PROXY TCP4 192.0.2.1 198.51.100.7 12345 443\r\n"), ALL, false,
     "192.0.2.1", 12345, "198.51.100.7", 443},
    {"v1 tcp6", B("PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n"), ALL, false,
     "2001:db8::1", 65535, "2001:db8::2", 0},
    {"v1 tcp6 v4-mapped", B("PROXY TCP6 ::ffff:192.0.2.9 ::1 1 2\r\n"), ALL, false,
     "::ffff:192.0.2.9", 1, "::1", 2},
    {"v1 tcp4 zeros", B("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"), ALL, false,
     "0.0.0.0", 0, "255.255.255.255", 65535},
    {"v1 unknown", B("PROXY UNKNOWN\r\n"), ALL, true, NULL, 0, NULL, 0},
    {"v1 unknown with fields", B("PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n"), ALL, true,
     NULL, 0, NULL, 0},
    {"v1 unknown at 107 bytes",
     B("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
       "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"), ALL, true, NULL, 0, NULL, 0},
    {"v1 tcp6 longest",
     B("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
       "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"), ALL, false,
     "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
     65535},

    /* ---- v1 rejected ---- */
    {"not proxy: http", B("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), PROXYPROTO_E_NOT_PROXY, REJECT},
    {"not proxy: lower case", B("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), PROXYPROTO_E_NOT_PROXY, REJECT},
    {"not proxy: PROXZ", B("PROXZ TCP4\r\n"), PROXYPROTO_E_NOT_PROXY, REJECT},
    {"not proxy: no space", B("PROXYTCP4 1.2.3.4\r\n"), PROXYPROTO_E_NOT_PROXY, REJECT},
    {"not proxy: TLS hello", B("\x16\x03\x01\x02\x00\x01"), PROXYPROTO_E_NOT_PROXY, REJECT},
    {"v1 empty", B("PROXY \r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 double space", B("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 double space mid", B("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 trailing space", B("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 tab", B("PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 bare LF", B("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 CR CR LF", B("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 NUL", B("PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 8-bit", B("PROXY UNKNOWN \xc3\xa9\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 TCP5", B("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 tcp4 lower", B("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 UNKNOWNX", B("PROXY UNKNOWNX\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 tcp4 with v6", B("PROXY TCP4 ::1 ::1 1 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 tcp6 with v4", B("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 leading zero octet", B("PROXY TCP4 192.0.2.01 5.6.7.8 1 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 octet 256", B("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 three octets", B("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 five octets", B("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 empty octet", B("PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 hex octet", B("PROXY TCP4 0x1.2.3.4 5.6.7.8 1 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 zone id", B("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 bad v6", B("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 port 65536", B("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 port leading zero", B("PROXY TCP4 1.2.3.4 5.6.7.8 0443 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 port signed", B("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 port negative", B("PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 port 6 digits", B("PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 three fields", B("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 five fields", B("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 no fields", B("PROXY TCP4\r\n"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v1 108 bytes",
     B("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
       "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffff 65535 65535\r\n"), PROXYPROTO_E_TOO_LONG, REJECT},
    {"v1 no CRLF in 107 bytes",
     B("PROXY UNKNOWN aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), PROXYPROTO_E_TOO_LONG, REJECT},
    {"v1 incomplete", B("PROXY TCP4 192.0.2.1 198.51"), PROXYPROTO_INCOMPLETE, REJECT},
    {"v1 incomplete at CR", B("PROXY TCP4 192.0.2.1 198.51.100.7 1 2\r"), PROXYPROTO_INCOMPLETE, REJECT},
    {"empty", (const uint8_t *)"", 0, PROXYPROTO_INCOMPLETE, REJECT},

    /* ---- v2 accepted ---- */
    {"v2 tcp4", B(V2SIG "\x21\x11\x00\x0c" "\xc0\x00\x02\x01" "\xc6\x33\x64\x07"
                  "\x30\x39" "\x01\xbb"), ALL, false, "192.0.2.1", 12345, "198.51.100.7", 443},
    {"v2 tcp6", B(V2SIG "\x21\x21\x00\x24"
                  "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
                  "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02"
                  "\xff\xff" "\x00\x50"), ALL, false, "2001:db8::1", 65535, "2001:db8::2", 80},
    {"v2 tcp4 with TLVs", B(V2SIG "\x21\x11\x00\x1a" "\x0a\x00\x00\x01" "\x0a\x00\x00\x02"
                            "\x00\x01" "\x00\x02"
                            "\x04\x00\x03" "\x00\x00\x00" /* NOOP */
                            "\x01\x00\x02" "h2" /* ALPN */
                            "\x05\x00\x00" /* UNIQUE_ID, empty */), ALL, false,
     "10.0.0.1", 1, "10.0.0.2", 2},
    {"v2 local", B(V2SIG "\x20\x00\x00\x00"), ALL, true, NULL, 0, NULL, 0},
    {"v2 local with addresses", B(V2SIG "\x20\x11\x00\x0c" "\x01\x02\x03\x04" "\x05\x06\x07\x08"
                                  "\x00\x01" "\x00\x02"), ALL, true, NULL, 0, NULL, 0},
    {"v2 local ignores family", B(V2SIG "\x20\x77\x00\x02" "\xff\xff"), ALL, true,
     NULL, 0, NULL, 0},
    {"v2 proxy unspec", B(V2SIG "\x21\x00\x00\x00"), ALL, true, NULL, 0, NULL, 0},

    /* ---- v2 rejected ---- */
    {"v2 bad signature", B("\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c"), PROXYPROTO_E_NOT_PROXY, REJECT},
    {"v2 CRLF CRLF only", B("\r\n\r\nGET"), PROXYPROTO_E_NOT_PROXY, REJECT},
    {"v2 version 1", B(V2SIG "\x11\x11\x00\x0c" "\x01\x02\x03\x04" "\x05\x06\x07\x08"
                       "\x00\x01" "\x00\x02"), PROXYPROTO_E_UNSUPPORTED, REJECT},
    {"v2 version 3", B(V2SIG "\x31\x11\x00\x0c"), PROXYPROTO_E_UNSUPPORTED, REJECT},
    {"v2 command 2", B(V2SIG "\x22\x11\x00\x0c"), PROXYPROTO_E_UNSUPPORTED, REJECT},
    {"v2 command 15", B(V2SIG "\x2f\x11\x00\x0c"), PROXYPROTO_E_UNSUPPORTED, REJECT},
    {"v2 udp4", B(V2SIG "\x21\x12\x00\x0c" "\x01\x02\x03\x04" "\x05\x06\x07\x08"
                  "\x00\x01" "\x00\x02"), PROXYPROTO_E_UNSUPPORTED, REJECT},
    {"v2 udp6", B(V2SIG "\x21\x22\x00\x24"), PROXYPROTO_E_UNSUPPORTED, REJECT},
    {"v2 family 4", B(V2SIG "\x21\x41\x00\x0c"), PROXYPROTO_E_UNSUPPORTED, REJECT},
    {"v2 transport 3", B(V2SIG "\x21\x13\x00\x0c"), PROXYPROTO_E_UNSUPPORTED, REJECT},
    {"v2 tcp4 short", B(V2SIG "\x21\x11\x00\x0b" "\x01\x02\x03\x04" "\x05\x06\x07\x08"
                        "\x00\x01" "\x00"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v2 tcp6 short", B(V2SIG "\x21\x21\x00\x0c" "\x01\x02\x03\x04" "\x05\x06\x07\x08"
                        "\x00\x01" "\x00\x02"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v2 unix short", B(V2SIG "\x21\x31\x00\x24"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v2 truncated TLV header", B(V2SIG "\x21\x11\x00\x0e" "\x01\x02\x03\x04" "\x05\x06\x07\x08"
                                  "\x00\x01" "\x00\x02" "\x04\x00"), PROXYPROTO_E_MALFORMED, REJECT},
    {"v2 TLV past the end", B(V2SIG "\x21\x11\x00\x10" "\x01\x02\x03\x04" "\x05\x06\x07\x08"
                              "\x00\x01" "\x00\x02" "\x04\x00\x02" "\x00"),
     PROXYPROTO_E_MALFORMED, REJECT},
    {"v2 length 65535", B(V2SIG "\x21\x11\xff\xff"), PROXYPROTO_E_TOO_LONG, REJECT},
    {"v2 length 2049", B(V2SIG "\x21\x11\x08\x01"), PROXYPROTO_E_TOO_LONG, REJECT},
    {"v2 local too long", B(V2SIG "\x20\x00\x08\x01"), PROXYPROTO_E_TOO_LONG, REJECT},
    {"v2 incomplete header", B(V2SIG "\x21\x11\x00"), PROXYPROTO_INCOMPLETE, REJECT},
    {"v2 incomplete addresses", B(V2SIG "\x21\x11\x00\x0c" "\x01\x02\x03\x04"),
     PROXYPROTO_INCOMPLETE, REJECT},
};
/* clang-format on */

#define NCASES (CHECK_NELEMS(cases))

static void addr_text(const struct sockaddr_storage *ss, char *out, size_t cap, unsigned *port)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &sin->sin_addr, out, (socklen_t)cap);
        *port = ntohs(sin->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, out, (socklen_t)cap);
        *port = ntohs(sin6->sin6_port);
    } else {
        snprintf(out, cap, "family %d", ss->ss_family);
        *port = 0;
    }
}

/* Checks the result of one whole-input parse against the case. */
static void check_result(const struct pcase *c, ssize_t r, const struct proxyproto_result *res)
{
    ssize_t want = c->want == ALL ? (ssize_t)c->len : c->want;
    ck_assert_msg(r == want, "%s: want %zd (%s), got %zd (%s)", c->name, want,
                  proxyproto_error_str(want), r, proxyproto_error_str(r));
    if (r <= 0)
        return;
    ck_assert_msg(res->version == (c->in[0] == 'P' ? 1 : 2), "%s: version %d", c->name,
                  res->version);
    ck_assert_msg(res->local == c->local, "%s: local %d", c->name, res->local);
    if (c->local) {
        ck_assert_int_eq(res->src.ss_family, AF_UNSPEC);
        ck_assert_int_eq(res->src_len, 0);
        return;
    }
    char text[INET6_ADDRSTRLEN + 16];
    unsigned port;
    addr_text(&res->src, text, sizeof(text), &port);
    ck_assert_msg(strcmp(text, c->src) == 0, "%s: src %s, want %s", c->name, text, c->src);
    ck_assert_msg(port == c->sport, "%s: sport %u, want %u", c->name, port, c->sport);
    socklen_t want_len =
        res->src.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    ck_assert_int_eq(res->src_len, want_len);
    ck_assert_int_eq(res->dst_len, want_len);
    addr_text(&res->dst, text, sizeof(text), &port);
    ck_assert_msg(strcmp(text, c->dst) == 0, "%s: dst %s, want %s", c->name, text, c->dst);
    ck_assert_msg(port == c->dport, "%s: dport %u, want %u", c->name, port, c->dport);
}

/* Each case parsed whole, from a heap copy of exactly its bytes (so ASan
 * sees any read past the end). */
START_TEST(whole)
{
    const struct pcase *c = &cases[_i];
    uint8_t *buf = malloc(c->len ? c->len : 1);
    ck_assert_ptr_nonnull(buf);
    memcpy(buf, c->in, c->len);
    struct proxyproto_result res;
    ssize_t r = proxyproto_parse(c->len ? buf : NULL, c->len, &res);
    check_result(c, r, &res);
    free(buf);
}
END_TEST

/* Every prefix answers INCOMPLETE or the whole input's answer; an
 * accepted header needs all its bytes. */
START_TEST(prefixes)
{
    const struct pcase *c = &cases[_i];
    for (size_t k = 0; k < c->len; k++) {
        uint8_t *buf = malloc(k ? k : 1);
        ck_assert_ptr_nonnull(buf);
        memcpy(buf, c->in, k);
        struct proxyproto_result res;
        ssize_t r = proxyproto_parse(buf, k, &res);
        free(buf);
        if (c->want > 0)
            ck_assert_msg(r == PROXYPROTO_INCOMPLETE, "%s: prefix %zu: got %zd", c->name, k, r);
        else
            ck_assert_msg(r == PROXYPROTO_INCOMPLETE || r == c->want,
                          "%s: prefix %zu: got %zd, whole gives %zd", c->name, k, r, c->want);
    }
}
END_TEST

/* Bytes after the header (the request, or the next TLS record) change
 * nothing: the same length and result. */
START_TEST(trailing)
{
    const struct pcase *c = &cases[_i];
    if (c->want == PROXYPROTO_INCOMPLETE)
        return;
    static const char tail[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n\0\xff";
    size_t len = c->len + sizeof(tail);
    uint8_t *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    memcpy(buf, c->in, c->len);
    memcpy(buf + c->len, tail, sizeof(tail));
    struct proxyproto_result res;
    ssize_t r = proxyproto_parse(buf, len, &res);
    check_result(c, r, &res);
    free(buf);
}
END_TEST

/* Builds a v2 header with the given ver/cmd and family bytes and plen
 * payload bytes (pattern) into buf; returns its length. */
static size_t build_v2(uint8_t *buf, uint8_t vc, uint8_t fam, size_t plen)
{
    memcpy(buf, V2SIG, 12);
    buf[12] = vc;
    buf[13] = fam;
    buf[14] = (uint8_t)(plen >> 8);
    buf[15] = (uint8_t)plen;
    for (size_t i = 0; i < plen; i++)
        buf[16 + i] = (uint8_t)(i * 7);
    return 16 + plen;
}

/* AF_UNIX addresses (216 bytes) keep the real peer; the largest payload
 * accepted is PROXYPROTO_V2_MAX_PAYLOAD, tiled by one TLV. */
START_TEST(v2_built)
{
    uint8_t *buf = malloc(PROXYPROTO_MAX_HEADER + 64);
    ck_assert_ptr_nonnull(buf);
    struct proxyproto_result res;

    size_t n = build_v2(buf, 0x21, 0x31, 216);
    ck_assert_int_eq(proxyproto_parse(buf, n, &res), (ssize_t)n);
    ck_assert(res.local);
    n = build_v2(buf, 0x21, 0x32, 216);
    ck_assert_int_eq(proxyproto_parse(buf, n, &res), (ssize_t)n);
    ck_assert(res.local);
    n = build_v2(buf, 0x21, 0x31, 215);
    ck_assert_int_eq(proxyproto_parse(buf, n, &res), PROXYPROTO_E_MALFORMED);

    /* TCP4 addresses then one TLV filling the payload to the bound. */
    size_t plen = PROXYPROTO_V2_MAX_PAYLOAD;
    n = build_v2(buf, 0x21, 0x11, plen);
    size_t tlv = plen - 12 - 3;
    buf[16 + 12] = 0xe0; /* PP2_TYPE_MIN_CUSTOM */
    buf[16 + 13] = (uint8_t)(tlv >> 8);
    buf[16 + 14] = (uint8_t)tlv;
    ck_assert_int_eq(n, PROXYPROTO_MAX_HEADER);
    ck_assert_int_eq(proxyproto_parse(buf, n, &res), (ssize_t)n);
    ck_assert(!res.local);
    ck_assert_int_eq(res.src.ss_family, AF_INET);
    ck_assert_int_eq(proxyproto_parse(buf, n - 1, &res), PROXYPROTO_INCOMPLETE);
    /* One TLV byte short of the payload: a truncated TLV. */
    buf[16 + 14] = (uint8_t)(tlv - 1);
    ck_assert_int_eq(proxyproto_parse(buf, n, &res), PROXYPROTO_E_MALFORMED);
    free(buf);
}
END_TEST

/* Every one of the 256 family/transport bytes with the PROXY command:
 * only the documented ones are taken. */
START_TEST(v2_families)
{
    uint8_t buf[16 + 216];
    for (unsigned fam = 0; fam < 256; fam++) {
        size_t n = build_v2(buf, 0x21, (uint8_t)fam, 216);
        struct proxyproto_result res;
        ssize_t r = proxyproto_parse(buf, n, &res);
        bool ok = fam == 0x00 || fam == 0x11 || fam == 0x21 || fam == 0x31 || fam == 0x32;
        if (!ok) {
            ck_assert_msg(r == PROXYPROTO_E_UNSUPPORTED, "family 0x%02x: %zd", fam, r);
            continue;
        }
        if (fam == 0x31 || fam == 0x32)
            ck_assert_msg(r == (ssize_t)n, "family 0x%02x: %zd", fam, r);
        ck_assert_msg(r != PROXYPROTO_E_UNSUPPORTED, "family 0x%02x refused", fam);
    }
}
END_TEST

START_TEST(error_strings)
{
    ck_assert_str_eq(proxyproto_error_str(PROXYPROTO_E_NOT_PROXY), "not a PROXY protocol header");
    ck_assert_ptr_nonnull(proxyproto_error_str(PROXYPROTO_E_TOO_LONG));
    ck_assert_ptr_nonnull(proxyproto_error_str(-99));
    ck_assert_str_eq(proxyproto_error_str(16), "ok");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("proxyproto");
    TCase *tc = tcase_create("core");
    tcase_add_loop_test(tc, whole, 0, NCASES);
    tcase_add_loop_test(tc, prefixes, 0, NCASES);
    tcase_add_loop_test(tc, trailing, 0, NCASES);
    tcase_add_test(tc, v2_built);
    tcase_add_test(tc, v2_families);
    tcase_add_test(tc, error_strings);
    suite_add_tcase(s, tc);
    return check_run(s);
}
