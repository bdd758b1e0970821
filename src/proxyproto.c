/* proxyproto: see proxyproto.h for the contract and the decisions. */
#include "proxyproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const char v1_prefix[] = "PROXY ";
#define V1_PREFIX_LEN 6
static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1
#define V2_TCP4 0x11
#define V2_TCP6 0x21
#define V2_UNIX_STREAM 0x31
#define V2_UNIX_DGRAM 0x32
#define V2_UNSPEC 0x00

/* ---- v1 ---------------------------------------------------------------------- */

/* Dotted-quad IPv4, four decimal numbers 0-255 without leading zeros. */
static bool parse_ipv4(const char *s, size_t len, struct in_addr *out)
{
    uint8_t b[4];
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= len || s[i] != '.')
                return false;
            i++;
        }
        size_t start = i;
        unsigned v = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9' && i - start < 3) {
            v = v * 10 + (unsigned)(s[i] - '0');
            i++;
        }
        size_t digits = i - start;
        if (digits == 0 || v > 255 || (digits > 1 && s[start] == '0'))
            return false;
        b[part] = (uint8_t)v;
    }
    if (i != len)
        return false;
    memcpy(&out->s_addr, b, 4);
    return true;
}

/* Textual IPv6 (hex digits, colons, an embedded dotted quad), no zone. */
static bool parse_ipv6(const char *s, size_t len, struct in6_addr *out)
{
    char tmp[INET6_ADDRSTRLEN];
    if (len == 0 || len >= sizeof(tmp))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
                  c == ':' || c == '.';
        if (!ok)
            return false;
    }
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    return inet_pton(AF_INET6, tmp, out) == 1;
}

/* Decimal 0-65535, no sign, no leading zeros. */
static bool parse_port(const char *s, size_t len, uint16_t *out)
{
    if (len == 0 || len > 5 || (len > 1 && s[0] == '0'))
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *out = (uint16_t)v;
    return true;
}

/* Splits line[*pos..len) at the next space: the token is [start, end).
 * Returns false for an empty token. *pos moves past the space (or to len). */
static bool next_token(const char *line, size_t len, size_t *pos, const char **tok, size_t *tlen)
{
    size_t start = *pos, i = start;
    while (i < len && line[i] != ' ')
        i++;
    if (i == start)
        return false;
    *tok = line + start;
    *tlen = i - start;
    if (i < len) {
        i++; /* the single separating space */
        if (i == len)
            return false; /* a trailing space */
    }
    *pos = i;
    return true;
}

static bool token_is(const char *tok, size_t tlen, const char *word)
{
    return tlen == strlen(word) && memcmp(tok, word, tlen) == 0;
}

/* Parses the fields of a complete v1 line (without "PROXY " and CRLF). */
static ssize_t parse_v1_fields(const char *line, size_t len, struct proxyproto_result *out)
{
    size_t pos = 0;
    const char *proto;
    size_t plen;
    /* "PROXY UNKNOWN" may be followed by anything: the peer is kept. */
    if (len >= 7 && memcmp(line, "UNKNOWN", 7) == 0 && (len == 7 || line[7] == ' ')) {
        out->local = true;
        return 0;
    }
    if (!next_token(line, len, &pos, &proto, &plen))
        return PROXYPROTO_E_MALFORMED;
    bool v4 = token_is(proto, plen, "TCP4");
    if (!v4 && !token_is(proto, plen, "TCP6"))
        return PROXYPROTO_E_MALFORMED;
    const char *f[4];
    size_t flen[4];
    for (int i = 0; i < 4; i++)
        if (pos >= len || !next_token(line, len, &pos, &f[i], &flen[i]))
            return PROXYPROTO_E_MALFORMED;
    if (pos != len)
        return PROXYPROTO_E_MALFORMED;
    uint16_t sport, dport;
    if (!parse_port(f[2], flen[2], &sport) || !parse_port(f[3], flen[3], &dport))
        return PROXYPROTO_E_MALFORMED;
    if (v4) {
        struct sockaddr_in *src = (struct sockaddr_in *)&out->src;
        struct sockaddr_in *dst = (struct sockaddr_in *)&out->dst;
        if (!parse_ipv4(f[0], flen[0], &src->sin_addr) ||
            !parse_ipv4(f[1], flen[1], &dst->sin_addr))
            return PROXYPROTO_E_MALFORMED;
        src->sin_family = dst->sin_family = AF_INET;
        src->sin_port = htons(sport);
        dst->sin_port = htons(dport);
        out->src_len = out->dst_len = sizeof(struct sockaddr_in);
    } else {
        struct sockaddr_in6 *src = (struct sockaddr_in6 *)&out->src;
        struct sockaddr_in6 *dst = (struct sockaddr_in6 *)&out->dst;
        if (!parse_ipv6(f[0], flen[0], &src->sin6_addr) ||
            !parse_ipv6(f[1], flen[1], &dst->sin6_addr))
            return PROXYPROTO_E_MALFORMED;
        src->sin6_family = dst->sin6_family = AF_INET6;
        src->sin6_port = htons(sport);
        dst->sin6_port = htons(dport);
        out->src_len = out->dst_len = sizeof(struct sockaddr_in6);
    }
    return 0;
}

/*
 * buf starts with "PROXY " (len >= 6). Finds the CRLF within the first
 * PROXYPROTO_V1_MAX bytes, rejecting any byte that cannot be part of a
 * line as soon as it is seen, then parses the fields.
 */
static ssize_t parse_v1(const uint8_t *buf, size_t len, struct proxyproto_result *out)
{
    size_t scan = len < PROXYPROTO_V1_MAX ? len : PROXYPROTO_V1_MAX;
    for (size_t i = V1_PREFIX_LEN; i < scan; i++) {
        uint8_t c = buf[i];
        if (c == '\r') {
            if (i + 2 > PROXYPROTO_V1_MAX)
                return PROXYPROTO_E_TOO_LONG;
            if (i + 1 == len)
                return PROXYPROTO_INCOMPLETE;
            if (buf[i + 1] != '\n')
                return PROXYPROTO_E_MALFORMED;
            out->version = 1;
            ssize_t r = parse_v1_fields((const char *)buf + V1_PREFIX_LEN, i - V1_PREFIX_LEN, out);
            return r < 0 ? r : (ssize_t)(i + 2);
        }
        if (c < 0x20 || c > 0x7e)
            return PROXYPROTO_E_MALFORMED; /* bare LF, NUL, controls, 8-bit */
    }
    return len >= PROXYPROTO_V1_MAX ? PROXYPROTO_E_TOO_LONG : PROXYPROTO_INCOMPLETE;
}

/* ---- v2 ---------------------------------------------------------------------- */

/* buf starts with the 12-byte signature (len >= 12). */
static ssize_t parse_v2(const uint8_t *buf, size_t len, struct proxyproto_result *out)
{
    if (len < PROXYPROTO_V2_HEADER)
        return PROXYPROTO_INCOMPLETE;
    unsigned version = buf[12] >> 4, command = buf[12] & 0x0f, fam = buf[13];
    size_t plen = (size_t)buf[14] << 8 | buf[15];
    if (version != 2 || command > V2_CMD_PROXY)
        return PROXYPROTO_E_UNSUPPORTED;
    if (plen > PROXYPROTO_V2_MAX_PAYLOAD)
        return PROXYPROTO_E_TOO_LONG;
    size_t addr_len = 0;
    if (command == V2_CMD_PROXY) {
        switch (fam) {
        case V2_TCP4:
            addr_len = 12;
            break;
        case V2_TCP6:
            addr_len = 36;
            break;
        case V2_UNIX_STREAM:
        case V2_UNIX_DGRAM:
            addr_len = 216;
            break;
        case V2_UNSPEC:
            addr_len = 0;
            break;
        default:
            return PROXYPROTO_E_UNSUPPORTED;
        }
        if (plen < addr_len)
            return PROXYPROTO_E_MALFORMED;
    }
    size_t total = PROXYPROTO_V2_HEADER + plen;
    if (len < total)
        return PROXYPROTO_INCOMPLETE;
    out->version = 2;
    if (command == V2_CMD_LOCAL) {
        out->local = true;
        return (ssize_t)total;
    }
    /* TLVs after the addresses: skipped, but they must tile the rest. */
    size_t off = PROXYPROTO_V2_HEADER + addr_len;
    while (off < total) {
        if (total - off < 3)
            return PROXYPROTO_E_MALFORMED;
        size_t tlen = (size_t)buf[off + 1] << 8 | buf[off + 2];
        if (tlen > total - off - 3)
            return PROXYPROTO_E_MALFORMED;
        off += 3 + tlen;
    }
    const uint8_t *a = buf + PROXYPROTO_V2_HEADER;
    if (fam == V2_TCP4) {
        struct sockaddr_in *src = (struct sockaddr_in *)&out->src;
        struct sockaddr_in *dst = (struct sockaddr_in *)&out->dst;
        src->sin_family = dst->sin_family = AF_INET;
        memcpy(&src->sin_addr, a, 4);
        memcpy(&dst->sin_addr, a + 4, 4);
        memcpy(&src->sin_port, a + 8, 2); /* both in network order already */
        memcpy(&dst->sin_port, a + 10, 2);
        out->src_len = out->dst_len = sizeof(struct sockaddr_in);
    } else if (fam == V2_TCP6) {
        struct sockaddr_in6 *src = (struct sockaddr_in6 *)&out->src;
        struct sockaddr_in6 *dst = (struct sockaddr_in6 *)&out->dst;
        src->sin6_family = dst->sin6_family = AF_INET6;
        memcpy(&src->sin6_addr, a, 16);
        memcpy(&dst->sin6_addr, a + 16, 16);
        memcpy(&src->sin6_port, a + 32, 2);
        memcpy(&dst->sin6_port, a + 34, 2);
        out->src_len = out->dst_len = sizeof(struct sockaddr_in6);
    } else {
        out->local = true; /* UNSPEC or AF_UNIX: no IP to take */
    }
    return (ssize_t)total;
}

/* ---- entry ------------------------------------------------------------------- */

ssize_t proxyproto_parse(const uint8_t *buf, size_t len, struct proxyproto_result *out)
{
    memset(out, 0, sizeof(*out));
    if (len == 0)
        return PROXYPROTO_INCOMPLETE;
    if (buf[0] == 'P') {
        size_t n = len < V1_PREFIX_LEN ? len : V1_PREFIX_LEN;
        if (memcmp(buf, v1_prefix, n) != 0)
            return PROXYPROTO_E_NOT_PROXY;
        return len < V1_PREFIX_LEN ? PROXYPROTO_INCOMPLETE : parse_v1(buf, len, out);
    }
    if (buf[0] == v2_sig[0]) {
        size_t n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
        if (memcmp(buf, v2_sig, n) != 0)
            return PROXYPROTO_E_NOT_PROXY;
        return len < sizeof(v2_sig) ? PROXYPROTO_INCOMPLETE : parse_v2(buf, len, out);
    }
    return PROXYPROTO_E_NOT_PROXY;
}

const char *proxyproto_error_str(ssize_t err)
{
    switch (err) {
    case PROXYPROTO_INCOMPLETE:
        return "incomplete PROXY header";
    case PROXYPROTO_E_NOT_PROXY:
        return "not a PROXY protocol header";
    case PROXYPROTO_E_MALFORMED:
        return "malformed PROXY protocol header";
    case PROXYPROTO_E_UNSUPPORTED:
        return "unsupported PROXY protocol version, command or family";
    case PROXYPROTO_E_TOO_LONG:
        return "PROXY protocol header too long";
    default:
        return err >= 0 ? "ok" : "unknown PROXY protocol error";
    }
}
