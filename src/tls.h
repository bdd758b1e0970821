/*
 * tls: TLS with OpenSSL 3, as a transport under io streams.
 *
 * Owns: the SSL_CTXs built from a config's listen[].tls and
 * upstreams.NAME.tls tables, the session ticket keys (process-wide, shared
 * by every worker, rotated hourly with the previous key still accepted),
 * the bound on a listener's sessions' age (TLS_SESSION_LIFETIME_S from the
 * full handshake, resumptions included), the client sessions kept per
 * upstream server for resumption, and the TLS transport (struct
 * io_transport) that io drives: nothing above io knows whether a stream
 * is encrypted. OpenSSL is included here only.
 *
 * Listeners: certificates are chosen by SNI from the DNS names of their
 * subjectAltName (exact names first, then one-label wildcards "*.x.y"),
 * the first certificate's context being the default; several
 * certificates for the same names (RSA and ECDSA) share one context and
 * OpenSSL picks by what the client supports. The handshake runs inside
 * the stream's reads, in callbacks (no coroutine): a connection costs no
 * stack until its first request head arrives, and the connection's
 * client_header timer (armed at accept) cuts a stalled handshake. The first
 * byte is looked at before OpenSSL sees it: plaintext HTTP gets a 400 in
 * cleartext and a close, anything else that is not a TLS handshake
 * record a close; both are counted and the connection logs why.
 *
 * Upstreams: tls_connect wraps a connected stream and completes the
 * handshake within the connect deadline; a failure (verification
 * included) is -EPROTO and tls_last_failure() says why.
 *
 * Rank: policy (it reads the config's tables; io calls it only through
 * the transport's function pointers). Runs on the main thread
 * (tls_config_load) or on a worker's thread (the rest).
 */
#ifndef FERRY_TLS_H
#define FERRY_TLS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

struct io_stream;

/*
 * Builds the TLS contexts of every listener and upstream with tls: of
 * cfg: reads each certificate, its chain, its key (an encrypted key is
 * refused), the CA files, checks that each key matches its certificate,
 * indexes the certificates by name. Every problem is printed to diag as
 * FILE:LINE:COLUMN: KEY: message, with FILE the config file and the
 * position that of the key naming the file; a certificate expiring within
 * 14 days is a warning. Returns 0 with the contexts attached to cfg (freed
 * with it: cfg->tls_free), or -1 with nothing attached.
 *
 * Call it on the main thread after config_load and before the config is
 * handed to workers. A reload calls it again on the new config: nothing
 * is shared with the old contexts but the ticket keys, so connections
 * resume across a reload, and connections made with the old contexts
 * keep them (OpenSSL's reference counts) until they close.
 */
int tls_config_load(struct config *cfg, FILE *diag);

/* Puts TLS (the listener's contexts) under an accepted stream, before any
 * byte moved; with proxy_header, a PROXY v1/v2 header is read from the
 * socket first (tls_proxy_header gives it). Returns 0 or -ENOMEM. */
int tls_accept(struct io_stream *s, const struct config_tls *t, bool proxy_header);
/* The PROXY header read before the handshake: false when none was. */
struct proxyproto_result;
bool tls_proxy_header(const struct io_stream *s, struct proxyproto_result *out);

/*
 * Puts TLS under a connected upstream stream and completes the handshake
 * by deadline (the connect's), verifying the server's certificate and
 * name unless verify: false, resuming the server's last session when it
 * has one. The name sent (SNI) and verified is tls.sni, else the Host
 * sent when host_header fixes it (a literal), else the server's host (an
 * IP is verified against the certificate's IP addresses and never sent as
 * SNI). A pooled connection serves requests of any Host, so the client's
 * Host is never used (as nginx's proxy_ssl_name). watch as in
 * io_connect. Returns 0, or -EPROTO (tls_last_failure() says why),
 * -ETIMEDOUT, -ECANCELED, -ECONNABORTED, -errno. May yield.
 */
int tls_connect(struct io_stream *s, const struct config_upstream *up, unsigned server,
                int64_t deadline, struct io_stream *watch);
/* Why this thread's last failed tls_connect failed: a string that lives as
 * long as the process ("upstream TLS: certificate verify failed: ..."). */
const char *tls_last_failure(void);

/* True when the stream is TLS and its handshake failed or never ended;
 * why (a string that lives as long as the process) in *why. */
bool tls_failed(const struct io_stream *s, const char **why);
/* True when the stream is TLS. */
bool tls_is(const struct io_stream *s);

/* The client certificate the handshake verified (listen[].tls.client_ca):
 * its subject (RFC 2253, printable ASCII) and SHA-256 fingerprint (64 hex
 * digits), strings that live as long as the stream. False when there is
 * none (not TLS, none sent, out of memory). Either pointer may be NULL. */
bool tls_client_identity(const struct io_stream *s, const char **subject, const char **fingerprint);
/*
 * A session lives TLS_SESSION_LIFETIME_S from its full handshake, however
 * often it was resumed: a client that reconnects at least once per ticket
 * lifetime gets a new ticket each time (TLS 1.3), and without this bound
 * its session (and a client certificate verified at its first handshake)
 * would never end. It is also the tickets' lifetime hint. Past it a
 * ticket is refused and the client makes a full handshake (RFC 8446
 * 4.6.1: tickets live at most 7 days, and a server may bound a session's
 * lifetime by its first handshake).
 */
#define TLS_SESSION_LIFETIME_S 3600
/* The seconds a session first made at born (Unix seconds) has left at
 * now: TLS_SESSION_LIFETIME_S - (now - born), or 0 when it may no longer
 * resume. A birth in the future (the clock went back) has none: a full
 * handshake costs little. A renewed ticket's lifetime hint is what is
 * left, so that a client does not keep a ticket the server will refuse. */
int64_t tls_session_left(int64_t born, int64_t now);

/* Counters, process-wide (relaxed atomics), for /metrics. */
struct tls_stats {
    unsigned long handshakes; /* completed on listeners */
    unsigned long resumed;    /* ...of which resumed a session */
    unsigned long failed;     /* handshakes that failed (protocol, version, garbage) */
    unsigned long plaintext;  /* plaintext HTTP sent to a TLS listener */
};
void tls_stats_get(struct tls_stats *out);
/* Calls fn for each certificate of cfg's listeners (after tls_config_load):
 * the listener's address, the certificate file and its notAfter (Unix
 * time), for the expiry gauge. */
void tls_cert_expiry(const struct config *cfg,
                     void (*fn)(void *arg, const char *listener, const char *file,
                                int64_t not_after),
                     void *arg);

#endif
