/*
 * config_value: value parsers of the config (durations, sizes, addresses,
 * CIDRs). The per-request CIDR match is config_trusted.c.
 */
#include "config.h"
#include "config_internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/un.h>

/* ---- value parsers ---- */

int config_parse_duration(const char *s, int64_t *ms, const char **why)
{
    static const int64_t max = 366LL * 24 * 3600 * 1000;
    const char *p = s;
    int64_t total = 0;
    if (streq(s, "0")) {
        *ms = 0;
        return 0;
    }
    if (!*p)
        goto bad;
    while (*p) {
        if (*p < '0' || *p > '9')
            goto bad;
        int64_t v = 0;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (*p++ - '0');
            if (v > max)
                goto too_large;
        }
        int64_t unit;
        if (p[0] == 'm' && p[1] == 's') {
            unit = 1;
            p += 2;
        } else if (*p == 's') {
            unit = 1000;
            p++;
        } else if (*p == 'm') {
            unit = 60 * 1000;
            p++;
        } else if (*p == 'h') {
            unit = 3600 * 1000;
            p++;
        } else if (*p == 'd') {
            unit = 24 * 3600 * 1000;
            p++;
        } else if (!*p) {
            *why = "a duration needs a unit: ms, s, m, h or d (like 250ms, 5s, 2m)";
            return -1;
        } else {
            goto bad;
        }
        if (v > max / unit)
            goto too_large;
        total += v * unit;
        if (total > max)
            goto too_large;
    }
    *ms = total;
    return 0;
bad:
    *why = "expected a duration like 250ms, 5s, 2m, 1h or 1h30m";
    return -1;
too_large:
    *why = "too large: a duration is at most 366d";
    return -1;
}

int config_parse_size(const char *s, uint64_t *bytes, const char **why)
{
    static const uint64_t max = 1ull << 50; /* 1 PiB: more is a typo */
    const char *p = s;
    uint64_t v = 0;
    if (*p < '0' || *p > '9')
        goto bad;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (uint64_t)(*p++ - '0');
        if (v > max)
            goto too_large;
    }
    uint64_t unit = 1;
    switch (*p) {
    case '\0':
        break;
    case 'k':
    case 'K':
        unit = 1ull << 10;
        p++;
        break;
    case 'm':
    case 'M':
        unit = 1ull << 20;
        p++;
        break;
    case 'g':
    case 'G':
        unit = 1ull << 30;
        p++;
        break;
    default:
        goto bad;
    }
    if (*p)
        goto bad;
    if (v > max / unit)
        goto too_large;
    *bytes = v * unit;
    return 0;
bad:
    *why = "expected a size like 512, 16k, 1m or 1g";
    return -1;
too_large:
    *why = "too large";
    return -1;
}
bool cfg_parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

/* ---- addresses and CIDRs ---- */

bool cfg_valid_hostname(const char *h)
{
    size_t len = strlen(h);
    if (len == 0 || len > 253)
        return false;
    for (const char *p = h; *p; p++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '.' || ch == '_'))
            return false;
    }
    return h[0] != '.' && h[0] != '-' && !strstr(h, "..");
}

/* What makes host (cfg_valid_hostname's characters) no DNS name a server
 * can be resolved by: NULL when it is one. Labels of 1 to 63 bytes that
 * neither start nor end with '-'; an all-digit last label is a mistyped IP
 * address ("300.1.1.1"), never asked of DNS. */
static const char *dns_name_problem(const char *host)
{
    const char *label = host;
    for (const char *p = host;; p++) {
        if (*p != '.' && *p)
            continue;
        size_t len = (size_t)(p - label);
        if (len == 0 && *p) /* "a..b" (an empty last label: a trailing dot) */
            return "not a valid host name (an empty label)";
        if (len > 63)
            return "not a valid host name (a label longer than 63 bytes)";
        if (len && (label[0] == '-' || label[len - 1] == '-'))
            return "not a valid host name (a label starts or ends with '-')";
        if (!*p) {
            bool digits = len > 0;
            for (const char *q = label; q < p; q++)
                digits &= *q >= '0' && *q <= '9';
            if (digits)
                return "not a valid IP address (nor a host name: its last label is a number)";
            return NULL;
        }
        label = p + 1;
    }
}

/*
 * Parses "host:port", "[v6]:port" or "unix:/path" into *a (strings in the
 * config arena). names_ok: a DNS name is allowed as host (servers), else the
 * host must be an IP literal (listeners). Returns NULL or why it is bad.
 */
const char *cfg_parse_addr(struct ctx *c, const char *s, bool names_ok, struct config_addr *a)
{
    memset(a, 0, sizeof(*a));
    a->text = cfg_strdup(c->mem, s);
    if (strncmp(s, "unix:", 5) == 0) {
        const char *path = s + 5;
        struct sockaddr_un *un = (struct sockaddr_un *)&a->sa;
        if (path[0] != '/')
            return "a unix socket path must be absolute (unix:/run/ferry/ferry.sock)";
        if (strlen(path) >= sizeof(un->sun_path))
            return "the unix socket path is too long (at most 107 bytes)";
        a->is_unix = true;
        a->numeric = true;
        a->path = cfg_strdup(c->mem, path);
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path, strlen(path) + 1);
        a->salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
        return NULL;
    }
    char host[256];
    const char *port, *why;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || (size_t)(close - s - 1) >= sizeof(host))
            return "expected [IPv6]:port";
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = '\0';
        if (close[1] != ':')
            return "expected a port after the address: [IPv6]:port";
        port = close + 2;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->sa;
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
            return "not a valid IPv6 address";
        in6->sin6_family = AF_INET6;
        a->salen = sizeof(*in6);
        a->numeric = true;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon)
            return "expected host:port (like 127.0.0.1:8080), [IPv6]:port or unix:/path";
        if (memchr(s, ':', (size_t)(colon - s)))
            return "an IPv6 address needs brackets: [::1]:8080";
        if (colon == s)
            return "expected a host before the port (0.0.0.0:8080 for every IPv4 address)";
        if ((size_t)(colon - s) >= sizeof(host))
            return "the host name is too long";
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
        port = colon + 1;
        struct sockaddr_in *in = (struct sockaddr_in *)&a->sa;
        if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
            in->sin_family = AF_INET;
            a->salen = sizeof(*in);
            a->numeric = true;
        } else if (!names_ok) {
            return "expected an IP address (like 0.0.0.0:8080 or [::]:8080), names are not "
                   "resolved here";
        } else if (!cfg_valid_hostname(host)) {
            return "not a valid host name";
        } else if ((why = dns_name_problem(host))) {
            return why;
        } else {
            for (char *p = host; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                    *p = (char)(*p - 'A' + 'a');
        }
    }
    uint64_t pv;
    if (!cfg_parse_u64(port, &pv) || pv == 0 || pv > 65535)
        return "expected a port from 1 to 65535";
    a->port = (uint16_t)pv;
    a->host = cfg_strdup(c->mem, host);
    if (a->sa.ss_family == AF_INET)
        ((struct sockaddr_in *)&a->sa)->sin_port = htons(a->port);
    else if (a->sa.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&a->sa)->sin6_port = htons(a->port);
    return NULL;
}
/* Parses "a.b.c.d[/n]" or "v6[/n]". Returns NULL or why it is bad;
 * *host_bits tells that bits beyond the prefix were set (and cleared). */
const char *cfg_parse_cidr(const char *s, struct config_cidr *out, bool *host_bits)
{
    char addr[64];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (alen >= sizeof(addr))
        return "expected an address or CIDR like 10.0.0.0/8 or fd00::/8";
    memcpy(addr, s, alen);
    addr[alen] = '\0';
    memset(out, 0, sizeof(*out));
    unsigned maxbits;
    if (inet_pton(AF_INET, addr, out->addr) == 1) {
        out->family = AF_INET;
        maxbits = 32;
    } else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
        out->family = AF_INET6;
        maxbits = 128;
    } else {
        return "expected an address or CIDR like 10.0.0.0/8 or fd00::/8";
    }
    uint64_t bits = maxbits;
    if (slash && (!cfg_parse_u64(slash + 1, &bits) || bits > maxbits))
        return maxbits == 32 ? "the prefix length must be 0 to 32"
                             : "the prefix length must be 0 to 128";
    out->prefix = (uint8_t)bits;
    *host_bits = false;
    for (unsigned i = 0; i < maxbits / 8; i++) {
        unsigned keep = bits >= (i + 1) * 8 ? 8 : bits > i * 8 ? (unsigned)bits - i * 8 : 0;
        uint8_t mask = (uint8_t)(keep ? 0xff << (8 - keep) : 0);
        if (out->addr[i] & ~mask)
            *host_bits = true;
        out->addr[i] &= mask;
    }
    return NULL;
}

void cfg_format_cidr(const struct config_cidr *cidr, char *buf, size_t size)
{
    char a[INET6_ADDRSTRLEN];
    inet_ntop(cidr->family, cidr->addr, a, sizeof(a));
    snprintf(buf, size, "%s/%u", a, cidr->prefix);
}
