/* headers: see headers.h for the contract and docs/http1.md for decisions. */
#include "headers.h"

#include <errno.h>
#include <string.h>

/* An output header list and its scratch space, both the caller's. */
struct builder {
    struct http1_header *out;
    size_t cap, n;
    char *scratch;
    size_t scratch_cap, used;
};

static int add(struct builder *b, const char *name, const char *value, size_t value_len)
{
    if (b->n == b->cap)
        return -ENOSPC;
    b->out[b->n].name = name;
    b->out[b->n].name_len = strlen(name);
    b->out[b->n].value = value;
    b->out[b->n].value_len = value_len;
    b->n++;
    return 0;
}

static int add_view(struct builder *b, const struct http1_header *h)
{
    if (b->n == b->cap)
        return -ENOSPC;
    b->out[b->n++] = *h;
    return 0;
}

/* Appends to the scratch value being built from `start`. */
static int scratch_put(struct builder *b, const char *s, size_t n)
{
    if (n > b->scratch_cap - b->used)
        return -ENOSPC;
    memcpy(b->scratch + b->used, s, n);
    b->used += n;
    return 0;
}

static int scratch_str(struct builder *b, const char *s)
{
    return scratch_put(b, s, strlen(s));
}

static bool name_is(const struct http1_header *h, const char *name)
{
    return http1_token_eq(h->name, h->name_len, name);
}

/* Does a Connection value list the field name n[0..len)? */
static bool list_has_n(const char *value, size_t vlen, const char *n, size_t len)
{
    size_t i = 0;
    while (i < vlen) {
        while (i < vlen && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
            i++;
        size_t start = i;
        while (i < vlen && value[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
            end--;
        if (end - start == len) {
            size_t k = 0;
            while (k < len && (value[start + k] | 0x20) == (n[k] | 0x20))
                k++;
            if (k == len)
                return true;
        }
    }
    return false;
}

/* The fields this module treats specially, found by length first. */
enum field {
    F_OTHER,
    F_HOP, /* hop-by-hop or re-serialised: never forwarded as is */
    F_HOST,
    F_UPGRADE,
    F_VIA,
    F_XFF,
    F_XFP,
    F_XFH,
    F_FORWARDED,
    F_REQUEST_ID,
    F_REAL_IP,
};

/* n[0..len) equals lit, a lowercase name of letters, digits and '-',
 * ignoring case. Exact for a token (what the parser and the config let
 * through as a field name): c | 0x20 folds only A-Z onto a-z there, and
 * maps no other token character onto a letter, digit or '-'. Fewer
 * instructions than http1_token_eq, on every field of every head. */
static inline bool lit_eq(const char *n, size_t len, const char *lit)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)(n[i] | 0x20) != (unsigned char)lit[i])
            return false;
    return true;
}

/* RFC 9110 §7.6.1 hop-by-hop fields, the legacy ones proxies drop,
 * Content-Length (framing is the serializer's) and HTTP2-Settings. */
static enum field classify(const struct http1_header *h)
{
    const char *n = h->name;
    switch (h->name_len) {
    case 2:
        return lit_eq(n, 2, "te") ? F_HOP : F_OTHER;
    case 3:
        return lit_eq(n, 3, "via") ? F_VIA : F_OTHER;
    case 4:
        return lit_eq(n, 4, "host") ? F_HOST : F_OTHER;
    case 7:
        if (lit_eq(n, 7, "upgrade"))
            return F_UPGRADE;
        return lit_eq(n, 7, "trailer") ? F_HOP : F_OTHER;
    case 9:
        if (lit_eq(n, 9, "forwarded"))
            return F_FORWARDED;
        return lit_eq(n, 9, "x-real-ip") ? F_REAL_IP : F_OTHER;
    case 10:
        if (lit_eq(n, 10, "connection") || lit_eq(n, 10, "keep-alive"))
            return F_HOP;
        return F_OTHER;
    case 12:
        return lit_eq(n, 12, "x-request-id") ? F_REQUEST_ID : F_OTHER;
    case 14:
        if (lit_eq(n, 14, "content-length") || lit_eq(n, 14, "http2-settings"))
            return F_HOP;
        return F_OTHER;
    case 15:
        return lit_eq(n, 15, "x-forwarded-for") ? F_XFF : F_OTHER;
    case 16:
        if (lit_eq(n, 16, "proxy-connection"))
            return F_HOP;
        return lit_eq(n, 16, "x-forwarded-host") ? F_XFH : F_OTHER;
    case 17:
        if (lit_eq(n, 17, "transfer-encoding"))
            return F_HOP;
        return lit_eq(n, 17, "x-forwarded-proto") ? F_XFP : F_OTHER;
    default:
        return F_OTHER;
    }
}

/* Would a field named with '_' be one Ferry owns or frames with, once a
 * server folds '_' into '-' (Transfer_Encoding, X_Real_IP)? Such names
 * are dropped even where underscores are allowed. */
static bool dashed_is_special(const struct http1_header *h)
{
    char name[24];
    if (h->name_len > sizeof(name))
        return false; /* longer than every special name */
    for (size_t i = 0; i < h->name_len; i++)
        name[i] = h->name[i] == '_' ? '-' : h->name[i];
    struct http1_header d = {.name = name, .name_len = h->name_len};
    return classify(&d) != F_OTHER;
}

/* The Connection fields of a message, remembered so each other field is
 * checked against them without scanning the whole list again (up to
 * MAX_CONNECTION_FIELDS of them; beyond, the slow scan). */
#define MAX_CONNECTION_FIELDS 16
struct connection {
    const struct http1_header *all; /* the message's fields */
    size_t nall;
    const struct http1_header *conn[MAX_CONNECTION_FIELDS];
    size_t nconn;
    bool overflow;
};

static void connection_init(struct connection *c, const struct http1_header *hs, size_t n)
{
    c->all = hs;
    c->nall = n;
    c->nconn = 0;
    c->overflow = false;
    for (size_t i = 0; i < n; i++) {
        if (hs[i].name_len != 10 || !http1_token_eq(hs[i].name, 10, "connection"))
            continue;
        if (c->nconn == MAX_CONNECTION_FIELDS)
            c->overflow = true;
        else
            c->conn[c->nconn++] = &hs[i];
    }
}

/* Is h named in one of the message's Connection values? */
static bool named_in_connection(const struct connection *c, const struct http1_header *h)
{
    if (c->overflow) {
        for (size_t i = 0; i < c->nall; i++) {
            const struct http1_header *f = &c->all[i];
            if (f->name_len == 10 && http1_token_eq(f->name, 10, "connection") &&
                list_has_n(f->value, f->value_len, h->name, h->name_len))
                return true;
        }
        return false;
    }
    for (size_t i = 0; i < c->nconn; i++) {
        if (list_has_n(c->conn[i]->value, c->conn[i]->value_len, h->name, h->name_len))
            return true;
    }
    return false;
}

/*
 * Joins every value of the fields named `name` with ", ", then `extra`
 * (if not NULL), into scratch. Returns the value length, or -ENOSPC;
 * *value points into scratch.
 */
static int join_values(struct builder *b, const struct http1_header *hs, size_t n, const char *name,
                       const char *extra, const char **value)
{
    size_t start = b->used;
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        if (!name_is(&hs[i], name) || hs[i].value_len == 0)
            continue;
        if ((any && scratch_put(b, ", ", 2) < 0) ||
            scratch_put(b, hs[i].value, hs[i].value_len) < 0)
            return -ENOSPC;
        any = true;
    }
    if (extra) {
        if ((any && scratch_put(b, ", ", 2) < 0) || scratch_str(b, extra) < 0)
            return -ENOSPC;
    }
    *value = b->scratch + start;
    return (int)(b->used - start);
}

bool headers_named_in(const char *name, size_t len, const struct http1_header *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (list[i].name_len == len && http1_token_eq(name, len, list[i].name))
            return true;
    return false;
}

int headers_rewrite(struct http1_header *out, size_t n, size_t cap, const struct http1_header *set,
                    size_t nset, const struct http1_header *add, size_t nadd,
                    const struct http1_header *remove, size_t nremove)
{
    if (nset + nadd + nremove == 0)
        return (int)n; /* most routes have no rules */
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (headers_named_in(out[i].name, out[i].name_len, remove, nremove) ||
            headers_named_in(out[i].name, out[i].name_len, set, nset))
            continue;
        out[kept++] = out[i];
    }
    if (kept + nset + nadd > cap)
        return -ENOSPC;
    for (size_t i = 0; i < nset; i++)
        out[kept++] = set[i];
    for (size_t i = 0; i < nadd; i++)
        out[kept++] = add[i];
    return (int)kept;
}

bool headers_request_id_valid(const char *id, size_t len)
{
    if (len == 0 || len > HEADERS_REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("._:+/=-", c)) ||
            c == '\0')
            return false;
    }
    return true;
}

bool headers_request_id(const struct http1_request *req, const char **id, size_t *len)
{
    const struct http1_header *found = NULL;
    unsigned count = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (classify(&req->headers[i]) == F_REQUEST_ID) {
            found = &req->headers[i];
            count++;
        }
    }
    if (count != 1 || !headers_request_id_valid(found->value, found->value_len))
        return false;
    *id = found->value;
    *len = found->value_len;
    return true;
}

/* Forwarded's node for an address: IPv6 quoted and bracketed (RFC 7239 §6). */
static int forwarded_element(struct builder *b, const char *addr, bool tls)
{
    bool v6 = strchr(addr, ':') != NULL;
    if (scratch_str(b, v6 ? "for=\"[" : "for=") < 0 || scratch_str(b, addr) < 0 ||
        (v6 && scratch_str(b, "]\"") < 0) || scratch_str(b, tls ? ";proto=https" : ";proto=http"))
        return -ENOSPC;
    return 0;
}

/* The client-address fields a request carried (first of each, from any
 * peer; only a trusted peer's are used). */
struct client_fields {
    const struct http1_header *xfp, *xfh, *real_ip;
    bool forwarded;
};

/*
 * Appends the fields Ferry owns about the client: X-Forwarded-For,
 * X-Forwarded-Proto, X-Forwarded-Host, Forwarded and X-Real-IP, each the
 * trusted peer's (extended where it is a chain) or Ferry's own.
 */
static int add_client_fields(struct builder *b, const struct http1_request *req,
                             const struct headers_forward *fwd, const struct client_fields *cf)
{
    const struct http1_header *hs = req->headers;
    size_t n = req->nheaders;
    const char *ip = fwd->client_addr ? fwd->client_addr : "unknown";
    bool trusted = fwd->trusted_peer;
    const char *v;
    int len = join_values(b, hs, trusted ? n : 0, "x-forwarded-for", ip, &v);
    if (len < 0 || add(b, "X-Forwarded-For", v, (size_t)len) < 0)
        return -ENOSPC;
    if (trusted && cf->xfp) {
        if (add_view(b, cf->xfp) < 0)
            return -ENOSPC;
    } else if (add(b, "X-Forwarded-Proto", fwd->tls ? "https" : "http", fwd->tls ? 5 : 4) < 0) {
        return -ENOSPC;
    }
    if (trusted && cf->xfh) {
        if (add_view(b, cf->xfh) < 0)
            return -ENOSPC;
    } else if (req->host && req->host_len &&
               add(b, "X-Forwarded-Host", req->host, req->host_len) < 0) {
        return -ENOSPC;
    }
    if (trusted && cf->forwarded) {
        len = join_values(b, hs, n, "forwarded", NULL, &v);
        if (len < 0)
            return -ENOSPC;
        size_t start = (size_t)(v - b->scratch);
        if ((len > 0 && scratch_put(b, ", ", 2) < 0) || forwarded_element(b, ip, fwd->tls) < 0 ||
            add(b, "Forwarded", b->scratch + start, b->used - start) < 0)
            return -ENOSPC;
    }
    if (trusted && cf->real_ip)
        return add_view(b, cf->real_ip);
    return add(b, "X-Real-IP", ip, strlen(ip));
}

int headers_forward_request(const struct http1_request *req, struct headers_forward *fwd,
                            struct http1_header *out, size_t cap, char *scratch, size_t scratch_cap)
{
    struct builder b = {out, cap, 0, scratch, scratch_cap, 0};
    const struct http1_header *hs = req->headers;
    size_t n = req->nheaders;
    struct client_fields cf = {NULL, NULL, NULL, false};
    const char *v;

    struct connection conn;
    connection_init(&conn, hs, n);
    if (fwd->host && add(&b, "Host", fwd->host, fwd->host_len) < 0)
        return -ENOSPC;
    for (size_t i = 0; i < n; i++) {
        const struct http1_header *h = &hs[i];
        switch (classify(h)) {
        case F_OTHER:
            if (memchr(h->name, '_', h->name_len) &&
                (!fwd->underscores_in_headers || dashed_is_special(h)))
                break; /* X_Forwarded_For would be HTTP_X_FORWARDED_FOR to CGI */
            if (!named_in_connection(&conn, h) && add_view(&b, h) < 0)
                return -ENOSPC;
            break;
        case F_XFP:
            cf.xfp = cf.xfp ? cf.xfp : h;
            break;
        case F_XFH:
            cf.xfh = cf.xfh ? cf.xfh : h;
            break;
        case F_REAL_IP:
            cf.real_ip = cf.real_ip ? cf.real_ip : h;
            break;
        case F_FORWARDED:
            cf.forwarded = true;
            break;
        default: /* hop-by-hop, Host, Upgrade, Via, X-Forwarded-For: re-made below */
            break;
        }
    }
    if (add_client_fields(&b, req, fwd, &cf) < 0)
        return -ENOSPC;
    int len = join_values(&b, hs, n, "via", HEADERS_VIA, &v);
    if (len < 0 || add(&b, "Via", v, (size_t)len) < 0)
        return -ENOSPC;

    if (fwd->request_id && add(&b, "X-Request-Id", fwd->request_id, fwd->request_id_len) < 0)
        return -ENOSPC;

    if (fwd->tunnel && req->upgrade_websocket) {
        if (add(&b, "Upgrade", "websocket", 9) < 0 || add(&b, "Connection", "upgrade", 7) < 0)
            return -ENOSPC;
    }
    return (int)b.n;
}

int headers_forward_response(const struct http1_response *resp, bool tunnel,
                             struct http1_header *out, size_t cap, char *scratch,
                             size_t scratch_cap)
{
    struct builder b = {out, cap, 0, scratch, scratch_cap, 0};
    const struct http1_header *hs = resp->headers, *upgrade = NULL;
    size_t n = resp->nheaders;
    const char *v;

    struct connection conn;
    connection_init(&conn, hs, n);
    for (size_t i = 0; i < n; i++) {
        const struct http1_header *h = &hs[i];
        enum field f = classify(h);
        if (f == F_UPGRADE && !upgrade)
            upgrade = h;
        if (f == F_HOP || f == F_UPGRADE || f == F_VIA || named_in_connection(&conn, h))
            continue;
        if (add_view(&b, h) < 0)
            return -ENOSPC;
    }
    int len = join_values(&b, hs, n, "via", HEADERS_VIA, &v);
    if (len < 0 || add(&b, "Via", v, (size_t)len) < 0)
        return -ENOSPC;
    if (tunnel && resp->status == 101 && upgrade) {
        if (add_view(&b, upgrade) < 0 || add(&b, "Connection", "upgrade", 7) < 0)
            return -ENOSPC;
    }
    return (int)b.n;
}

/* ---- paths ------------------------------------------------------------------ */

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool is_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/*
 * Pass 1 decodes unreserved percent-encodings (so "%2e%2e" is a dot
 * segment for pass 2, as RFC 3986 §6.2.2.2 allows) and rejects the bytes
 * that would mean different paths to different backends. Pass 2 removes
 * dot segments and merges empty ones, in place (it never writes ahead of
 * where it reads).
 */
ssize_t headers_path_normalise(const char *path, size_t len, char *out, size_t cap)
{
    if (len == 1 && path[0] == '*') {
        if (cap < 1)
            return -ENOSPC;
        out[0] = '*';
        return 1;
    }
    if (len == 0 || path[0] != '/')
        return HTTP1_E_PATH;
    if (cap < len)
        return -ENOSPC;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c == '\\')
            return HTTP1_E_PATH_BACKSLASH;
        if (c != '%') {
            out[o++] = (char)c;
            continue;
        }
        if (len - i < 3 || hexval((unsigned char)path[i + 1]) < 0 ||
            hexval((unsigned char)path[i + 2]) < 0)
            return HTTP1_E_PATH_PERCENT;
        int v = hexval((unsigned char)path[i + 1]) * 16 + hexval((unsigned char)path[i + 2]);
        if (v == '/')
            return HTTP1_E_PATH_ENCODED_SLASH;
        if (v == '\\')
            return HTTP1_E_PATH_BACKSLASH;
        if (v == 0)
            return HTTP1_E_PATH_PERCENT;
        if (is_unreserved((unsigned char)v)) {
            out[o++] = (char)v;
        } else {
            static const char hex[] = "0123456789ABCDEF";
            out[o++] = '%';
            out[o++] = hex[v >> 4];
            out[o++] = hex[v & 15];
        }
        i += 2;
    }

    size_t r = 0, w = 0, dlen = o;
    bool trailing = false;
    while (r < dlen) {
        /* out[r] == '/': the segment is out[r+1 .. e) */
        size_t s = r + 1, e = s;
        while (e < dlen && out[e] != '/')
            e++;
        size_t sl = e - s;
        bool last = e == dlen;
        if (sl == 0 || (sl == 1 && out[s] == '.')) {
            trailing = last;
        } else if (sl == 2 && out[s] == '.' && out[s + 1] == '.') {
            while (w > 0 && out[w - 1] != '/')
                w--;
            if (w > 0)
                w--; /* the '/' before the popped segment */
            trailing = last;
        } else {
            out[w++] = '/';
            memmove(out + w, out + s, sl);
            w += sl;
            trailing = false;
        }
        r = e;
    }
    if (w == 0 || trailing)
        out[w++] = '/';
    return (ssize_t)w;
}

bool headers_path_has_prefix(const char *path, size_t len, const char *prefix, size_t plen)
{
    if (plen == 0)
        return true;
    if (plen > len || memcmp(path, prefix, plen) != 0)
        return false;
    return plen == len || prefix[plen - 1] == '/' || path[plen] == '/';
}

size_t headers_path_rewrite(const char *path, size_t len, const char *strip, size_t strip_len,
                            const char *add_, size_t add_len, char *out, size_t cap)
{
    const char *rest = path;
    size_t rest_len = len;
    if (strip_len && headers_path_has_prefix(path, len, strip, strip_len)) {
        size_t cut = strip[strip_len - 1] == '/' ? strip_len - 1 : strip_len;
        rest = path + cut;
        rest_len = len - cut;
    }
    size_t need = 0;
    char *p = out;
#define EMIT(s, n)                                                                                 \
    do {                                                                                           \
        size_t n_ = (n);                                                                           \
        if (need + n_ < cap)                                                                       \
            memcpy(p + need, (s), n_);                                                             \
        else if (need < cap)                                                                       \
            memcpy(p + need, (s), cap - need);                                                     \
        need += n_;                                                                                \
    } while (0)
    if (add_len) {
        if (add_[add_len - 1] == '/' && rest_len && rest[0] == '/')
            add_len--;
        EMIT(add_, add_len);
        EMIT(rest, rest_len);
        if (need == 0)
            EMIT("/", 1);
    } else if (rest_len == 0) {
        EMIT("/", 1);
    } else {
        EMIT(rest, rest_len);
    }
#undef EMIT
    if (cap)
        out[need < cap ? need : cap - 1] = '\0';
    return need;
}

ssize_t headers_host_normalise(const char *host, size_t len, char *out, size_t cap)
{
    if (!http1_host_valid(host, len))
        return HTTP1_E_HOST_INVALID;
    size_t end;
    if (len && host[0] == '[') {
        end = (size_t)((const char *)memchr(host, ']', len) - host) + 1;
    } else {
        const char *colon = memchr(host, ':', len);
        end = colon ? (size_t)(colon - host) : len;
        if (end && host[end - 1] == '.')
            end--;
        if (end == 0 && len)
            return HTTP1_E_HOST_INVALID;
    }
    if (cap < end)
        return -ENOSPC;
    for (size_t i = 0; i < end; i++) {
        unsigned char c = (unsigned char)host[i];
        out[i] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
    return (ssize_t)end;
}

bool headers_path_has_params(const char *path, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (path[i] == ';')
            return true;
        if (path[i] == '%' && i + 2 < len && path[i + 1] == '3' && (path[i + 2] | 0x20) == 'b')
            return true;
    }
    return false;
}
