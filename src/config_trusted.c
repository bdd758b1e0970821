/*
 * config_trusted: the one per-request question the config answers (is this
 * peer a trusted proxy?), apart from the loader. Reads an immutable
 * config; no allocation, no locks.
 */
#include "config.h"

#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

static bool cidr_contains(const struct config_cidr *cidr, const uint8_t *addr)
{
    unsigned bits = cidr->prefix;
    unsigned full = bits / 8, rest = bits % 8;
    if (memcmp(cidr->addr, addr, full) != 0)
        return false;
    if (!rest)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (addr[full] & mask) == cidr->addr[full];
}

bool config_trusted(const struct config *cfg, const struct sockaddr *sa)
{
    uint8_t addr[16];
    int family = sa->sa_family;
    if (family == AF_UNIX)
        return true;
    if (family == AF_INET) {
        memcpy(addr, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    } else if (family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            family = AF_INET;
            memcpy(addr, a6->s6_addr + 12, 4);
        } else {
            memcpy(addr, a6->s6_addr, 16);
        }
    } else {
        return false;
    }
    for (size_t i = 0; i < cfg->ntrusted_proxies; i++)
        if (cfg->trusted_proxies[i].family == family &&
            cidr_contains(&cfg->trusted_proxies[i], addr))
            return true;
    return false;
}
