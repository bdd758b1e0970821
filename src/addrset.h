/*
 * addrset: the set of addresses a DNS name resolves to (resolve.c), as a
 * value: built from an answer (sorted, duplicates dropped, at most
 * ADDRSET_MAX kept), compared with the last one, and the re-resolution
 * delay derived from the answer's TTL.
 *
 * Policy layer, pure: no libevent, no sockets.
 */
#ifndef FERRY_ADDRSET_H
#define FERRY_ADDRSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Addresses kept per name: an answer with more keeps the lowest (a
 * stable choice, so a reordered answer changes nothing). */
#define ADDRSET_MAX 64

/* The bounds of the re-resolution delay, milliseconds. */
#define ADDRSET_TTL_MIN_MS 1000
#define ADDRSET_TTL_MAX_MS 300000

struct addrset_addr {
    uint8_t family;    /* 4 or 6 */
    uint8_t bytes[16]; /* network order; IPv4 uses bytes[0..3] */
};

struct addrset {
    struct addrset_addr a[ADDRSET_MAX];
    size_t n;
};

/* Empties the set. */
void addrset_clear(struct addrset *s);

/* Adds one address (4 or 16 bytes: family 4 or 6), keeping the set sorted
 * and free of duplicates; when full, a new address lower than the highest
 * replaces it. Returns false when the set was full (the answer was
 * truncated to ADDRSET_MAX), true otherwise. */
bool addrset_add(struct addrset *s, int family, const void *bytes);

/* Same addresses? */
bool addrset_equal(const struct addrset *a, const struct addrset *b);

/* How many of `to`'s addresses are not in `from` (added) and of `from`'s
 * not in `to` (removed). */
void addrset_diff(const struct addrset *from, const struct addrset *to, size_t *added,
                  size_t *removed);

/* Is an address IPv6 link-local (fe80::/10)? Such an address means
 * nothing without the interface it is on (a scope id), which neither an
 * AAAA record nor an /etc/hosts line without "%IF" can carry. */
bool addrset_link_local(int family, const void *bytes);

/* The re-resolution delay for a TTL in seconds (negative: unknown, the
 * minimum): clamped to [ADDRSET_TTL_MIN_MS, ADDRSET_TTL_MAX_MS]. */
int64_t addrset_ttl_ms(int64_t ttl_s);

/* The text of an address into buf ("10.0.0.1", "2001:db8::1"). */
void addrset_format(const struct addrset_addr *a, char *buf, size_t size);

#endif
