/*
 * resolve: DNS names as server addresses (upstreams.NAME.servers[].address
 * "api.internal:8080").
 *
 * One resolver for the whole process, on the main thread's event base
 * (libevent's evdns: never a blocking getaddrinfo), not one per worker:
 * one query per name however many workers, and every worker sees the same
 * set of addresses. Nameservers: the config's `resolver:` list, else those
 * of /etc/resolv.conf (with its search list and options); each query times
 * out after 2 s and is tried twice. /etc/hosts comes first, as in the C
 * library: a name it lists takes its addresses of the families asked from
 * it (read again every 60 s) and is never asked of a nameserver.
 * (evdns_base_load_hosts would only serve evdns_getaddrinfo, which gives
 * no TTL: the file is read here.)
 *
 * Families: upstreams.NAME.resolve (config_resolve) says which are asked:
 * any (A and AAAA, two queries in flight together), ipv4 or ipv6; a name
 * is tracked once per (host, families). Every address of the families
 * asked becomes a server of its own, with the configured weight:
 * resolve_expand rewrites a config's servers before the workers see it,
 * and each address gets the identity "NAME:PORT@IP" or
 * "NAME:PORT@[IPv6]" (addr.text: the registry key, the pool key,
 * /status, /metrics, the admin drain path), so balancers, health checks,
 * passive ejection and drain treat it as any server, and a later config
 * that keeps the address keeps its state and pool. The Host sent
 * (host_header: upstream) and the TLS name stay the name as written.
 * A link-local IPv6 address (fe80::/10) of an answer or an /etc/hosts
 * line is skipped, logged once per name: an address record carries no
 * scope id (the interface), without which a connect fails; a family whose
 * records are all link-local answered NODATA.
 * evdns keeps at most 32 records of each family of an answer;
 * ADDRSET_MAX (64) bounds a name whatever the resolver (a larger set
 * keeps the lowest 64, logged once).
 *
 * A round asks every family and ends when all have answered or failed.
 * An answer without records of a family (NODATA) is an answer: that
 * family has no address; so is NXDOMAIN for one family while the other
 * has records (evdns ends a search list with the last domain's answer).
 * A family that fails (timeout, SERVFAIL, NXDOMAIN) while another
 * answers keeps its last good set (nginx keeps a name's last addresses
 * on an error), logged once per change of state, and the name is asked
 * again within 5 s; the name's set is the union. Every family failing,
 * or no address at all, is a failed resolution (below).
 *
 * Re-resolution: each name is asked again when the shortest TTL of its
 * answers runs out, clamped to [1 s, 5 min]: the records' TTL of an
 * answer with addresses, the negative-caching TTL of a NODATA answer
 * (RFC 2308: the lower of the TTL and the MINIMUM of the SOA in its
 * authority section, which evdns reports; a NODATA answer without an SOA
 * sets none).
 * When a name's set of addresses changes, the `changed` callback runs
 * (once per turn of the loop, however many names changed): the server
 * rebuilds the config from the text it was loaded from
 * (config->source_), expands it with the new sets and publishes it
 * exactly as a reload does (snapshot.h): pools and registry entries of
 * addresses that stay carry over; a removed address's pool closes its
 * idle connections and goes once its requests in flight end. A failed
 * resolution (timeout, NXDOMAIN, SERVFAIL, no address) keeps the last
 * good set, is logged once when the name starts failing and once when
 * it resolves again, and is retried every 5 s (when every family asked
 * answered NODATA with a negative TTL: at the shortest of them, clamped
 * as above).
 *
 * At start, every name is resolved before the workers start (the main
 * thread waits for the answers, at most the queries' timeouts). A name
 * that does not resolve then is a warning, not an error (a backend's DNS
 * entry may come later): until it resolves, its server stays as written
 * with the upstream marked `unresolved`, and upstream_pick never picks it
 * (no other server: the 503 of an upstream whose servers are all down). A
 * reload that adds a name asks it at once and publishes its addresses
 * when they come.
 *
 * A late or spoofed answer: evdns matches an answer's id and question to a
 * query in flight; a name no config uses any more has its query cancelled
 * (its memory goes when evdns reports the cancel), so a late answer
 * changes nothing.
 *
 * Registry holds: resolve_expand also makes the config hold the registry
 * entries of all its servers (registry.h) until its last unref, so the
 * registry holds only the servers of configs alive (and drained ones),
 * however many addresses a name's answers bring over time.
 *
 * Calls: config, addrset, registry, log, libevent (core, evdns). Main
 * thread only (but a config's release runs where its last unref is).
 */
#ifndef FERRY_RESOLVE_H
#define FERRY_RESOLVE_H

struct config;
struct event_base;

/* Starts the resolver on base for cfg's names and waits for their first
 * answers (or failures, logged). changed(arg) runs on base when a name's
 * addresses change afterwards. Returns 0, or -1 (out of memory, logged).
 * A config without names creates nothing. */
int resolve_start(struct event_base *base, const struct config *cfg, void (*changed)(void *),
                  void *arg);

/* A config that will be published (a reload, or a re-expansion): its new
 * names are asked (their answers come later), names no longer used are
 * dropped; then resolve_expand(cfg). After resolve_start only. */
void resolve_update(struct config *cfg);

/* The names asked are cfg's (published already: a reload that failed
 * after resolve_update goes back to the running config's names). */
void resolve_names(const struct config *cfg);

/* Rewrites cfg's servers whose address is a name into one server per
 * known address (see above). cfg must not be published yet. Out of
 * memory aborts (like the config loader). */
void resolve_expand(struct config *cfg);

/* Drops every name and the resolver (at exit). */
void resolve_stop(void);

#endif
