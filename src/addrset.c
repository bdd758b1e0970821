/* addrset: see addrset.h. */
#include "addrset.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

void addrset_clear(struct addrset *s)
{
    s->n = 0;
}

/* Order: IPv4 before IPv6, then by bytes. */
static int cmp(const struct addrset_addr *x, const struct addrset_addr *y)
{
    if (x->family != y->family)
        return x->family < y->family ? -1 : 1;
    return memcmp(x->bytes, y->bytes, x->family == 4 ? 4 : 16);
}

bool addrset_add(struct addrset *s, int family, const void *bytes)
{
    struct addrset_addr v = {.family = (uint8_t)family};
    memcpy(v.bytes, bytes, family == 4 ? 4 : 16);
    size_t at = 0;
    while (at < s->n && cmp(&s->a[at], &v) < 0)
        at++;
    if (at < s->n && cmp(&s->a[at], &v) == 0)
        return true;
    bool room = s->n < ADDRSET_MAX;
    if (!room && at == s->n)
        return false; /* higher than every kept one */
    size_t move = (room ? s->n : s->n - 1) - at;
    memmove(&s->a[at + 1], &s->a[at], move * sizeof(v));
    s->a[at] = v;
    if (room)
        s->n++;
    return room;
}

bool addrset_equal(const struct addrset *a, const struct addrset *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (cmp(&a->a[i], &b->a[i]) != 0)
            return false;
    return true;
}

void addrset_diff(const struct addrset *from, const struct addrset *to, size_t *added,
                  size_t *removed)
{
    size_t i = 0, j = 0, add = 0, rem = 0;
    while (i < from->n || j < to->n) {
        int c = i == from->n ? 1 : j == to->n ? -1 : cmp(&from->a[i], &to->a[j]);
        if (c == 0) {
            i++;
            j++;
        } else if (c < 0) {
            rem++;
            i++;
        } else {
            add++;
            j++;
        }
    }
    *added = add;
    *removed = rem;
}

bool addrset_link_local(int family, const void *bytes)
{
    const uint8_t *b = bytes;
    return family == 6 && b[0] == 0xfe && (b[1] & 0xc0) == 0x80;
}

int64_t addrset_ttl_ms(int64_t ttl_s)
{
    if (ttl_s < 0 || ttl_s < ADDRSET_TTL_MIN_MS / 1000)
        return ADDRSET_TTL_MIN_MS;
    if (ttl_s > ADDRSET_TTL_MAX_MS / 1000)
        return ADDRSET_TTL_MAX_MS;
    return ttl_s * 1000;
}

void addrset_format(const struct addrset_addr *a, char *buf, size_t size)
{
    if (!inet_ntop(a->family == 4 ? AF_INET : AF_INET6, a->bytes, buf, (socklen_t)size))
        snprintf(buf, size, "?");
}
