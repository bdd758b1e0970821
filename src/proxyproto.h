/*
 * proxyproto: a pure parser for the PROXY protocol, versions 1 (text) and
 * 2 (binary), as HAProxy specifies it (doc/proxy-protocol.txt). An L4
 * balancer in front of Ferry sends one such header first on each
 * connection; it carries the real client's address.
 *
 * Pure: bytes in, a result out. No libevent, no coroutines, no I/O; it is
 * unit-tested and fuzzed without sockets. The caller (the listener/conn on
 * a `proxy_protocol: true` listener) feeds what it has read so far, from
 * the first byte of the connection, and calls again with more bytes on
 * PROXYPROTO_INCOMPLETE. The answer for a prefix is either INCOMPLETE or
 * the answer for the whole input, so feeding byte by byte gives the same
 * result as feeding everything at once. Never more than
 * PROXYPROTO_MAX_HEADER bytes are needed to decide.
 *
 * Decisions (strict where ambiguity could be abused; a listener that
 * expects the header closes the connection on any error, without answer):
 *
 * v1: "PROXY" SP ("TCP4" | "TCP6") SP src SP dst SP sport SP dport CRLF, or
 *     "PROXY UNKNOWN" followed by anything up to CRLF (ignored). At most
 *     107 bytes including CRLF. Exactly one space between fields, no
 *     leading or trailing space, CR only as part of the final CRLF, no bare
 *     LF. Addresses: dotted-quad IPv4 (four decimal numbers 0-255, no
 *     leading zeros) for TCP4, textual IPv6 (RFC 4291 forms, v4-mapped
 *     included; no zone id) for TCP6. Ports: decimal 0-65535, no sign and
 *     no leading zeros ("0" alone is fine). UNKNOWN keeps the real peer.
 *
 * v2: the 12-byte signature, version 2 (high nibble of byte 13; any other
 *     version is UNSUPPORTED), command LOCAL (keep the real peer: health
 *     checks from the balancer) or PROXY (any other command: UNSUPPORTED),
 *     family/transport byte 0x11 (TCP over IPv4) or 0x21 (TCP over IPv6)
 *     carry the addresses; 0x00 (UNSPEC) and 0x31/0x32 (AF_UNIX) keep the
 *     real peer; UDP (0x12, 0x22) and any other value are UNSUPPORTED. The
 *     16-bit length must cover the address block of the family
 *     (12/36/216 bytes) and be at most PROXYPROTO_V2_MAX_PAYLOAD, else
 *     MALFORMED / TOO_LONG. With LOCAL, the family and addresses are not
 *     looked at (the specification says the receiver must ignore them),
 *     only the length bound. The bytes after the addresses are TLVs
 *     (type, 16-bit length, value): they are skipped, but must tile the
 *     rest exactly (a truncated TLV is MALFORMED). The CRC32C TLV is not
 *     verified.
 */
#ifndef FERRY_PROXYPROTO_H
#define FERRY_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define PROXYPROTO_V1_MAX 107          /* whole v1 line, CRLF included */
#define PROXYPROTO_V2_HEADER 16        /* signature, ver/cmd, fam, length */
#define PROXYPROTO_V2_MAX_PAYLOAD 2048 /* addresses + TLVs Ferry accepts */
/* Bytes a caller may need to buffer before proxyproto_parse decides. */
#define PROXYPROTO_MAX_HEADER (PROXYPROTO_V2_HEADER + PROXYPROTO_V2_MAX_PAYLOAD)

/* Negative results of proxyproto_parse. */
enum proxyproto_error {
    PROXYPROTO_INCOMPLETE = -1,    /* a valid prefix: read more and call again */
    PROXYPROTO_E_NOT_PROXY = -2,   /* starts with neither "PROXY " nor the v2 signature */
    PROXYPROTO_E_MALFORMED = -3,   /* a PROXY header that breaks the grammar */
    PROXYPROTO_E_UNSUPPORTED = -4, /* well-formed, but a version, command or
                                    * family/transport Ferry does not take */
    PROXYPROTO_E_TOO_LONG = -5,    /* v1 line over 107 bytes, v2 over the bound */
};

struct proxyproto_result {
    int version; /* 1 or 2 */
    /* true: keep the connection's real peer address (v1 UNKNOWN, v2 LOCAL,
     * v2 UNSPEC or AF_UNIX); src/dst are then unset (family AF_UNSPEC). */
    bool local;
    struct sockaddr_storage src; /* the client: AF_INET or AF_INET6, with port */
    socklen_t src_len;
    struct sockaddr_storage dst; /* the address the client connected to */
    socklen_t dst_len;
};

/*
 * Parses a PROXY header at the start of buf[0..len). Returns the header's
 * length in bytes (what to drain before the application data), with *out
 * filled, or an enum proxyproto_error; *out is unspecified then. buf may
 * be NULL when len is 0. Never reads past buf + len.
 */
ssize_t proxyproto_parse(const uint8_t *buf, size_t len, struct proxyproto_result *out);

/* A short English name for a proxyproto_parse error ("not a PROXY header"). */
const char *proxyproto_error_str(ssize_t err);

#endif
