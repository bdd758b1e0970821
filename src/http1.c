/*
 * http1: see http1.h for the contract and docs/http1.md for the decisions.
 *
 * A head is parsed in two passes over bytes that are each read once:
 * a scan finds line ends as bytes arrive (rejecting bare LF at once, and
 * checking the request line and the target length as soon as they are
 * known), and when the empty line is found the field lines are parsed in
 * one go into views. Errors that depend on the whole head (missing Host,
 * CL with TE) are decided then, so the result never depends on how the
 * bytes were split across calls.
 */
#include "http1.h"

#include <stdio.h>
#include <string.h>

/* Character classes: bit 1 tchar (RFC 9110 §5.6.2), bit 2 field-value
 * byte other than SP/HTAB (VCHAR / obs-text), bit 4 request-target byte,
 * bit 8 hex digit. */
#define C_TCHAR 1
#define C_VALUE 2
#define C_TARGET 4
#define C_HEX 8
#define C_FIELD 16 /* C_VALUE or SP/HTAB: any byte allowed inside a value */
#define C_HOST 32  /* a reg-name byte Ferry accepts: ALPHA DIGIT - . _ */

static unsigned char cclass[256];
static unsigned char lower_tab[256];

/* Filled once before main (a constructor), so threads only ever read. */
__attribute__((constructor)) static void cclass_init(void)
{
    for (int c = 0; c < 256; c++) {
        unsigned char k = 0;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c && strchr("!#$%&'*+-.^_`|~", c)))
            k |= C_TCHAR;
        if ((c > 0x20 && c < 0x7f) || c >= 0x80)
            k |= C_VALUE;
        if (c > 0x20 && c < 0x7f && c != '#')
            k |= C_TARGET;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
            k |= C_HEX;
        if ((k & C_VALUE) || c == ' ' || c == '\t')
            k |= C_FIELD;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            c == '-' || c == '.' || c == '_')
            k |= C_HOST;
        cclass[c] = k;
        lower_tab[c] = (unsigned char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
}

static inline bool is_tchar(unsigned char c)
{
    return cclass[c] & C_TCHAR;
}

static inline bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static inline int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int http1_error_status(int err)
{
    switch (err) {
    case HTTP1_E_BODY_TOO_LARGE:
        return 413;
    case HTTP1_E_TARGET_TOO_LONG:
        return 414;
    case HTTP1_E_HEAD_TOO_LARGE:
    case HTTP1_E_TOO_MANY_HEADERS:
        return 431;
    case HTTP1_E_TE_UNKNOWN:
    case HTTP1_E_CONNECT:
        return 501;
    case HTTP1_E_VERSION_UNSUPPORTED:
        return 505;
    case HTTP1_E_STATUS:
    case HTTP1_E_REASON_CHAR:
    case HTTP1_E_SERIALIZE:
        return 502;
    case HTTP1_E_NOMEM:
        return 503;
    default:
        return 400;
    }
}

const char *http1_error_str(int err)
{
    switch (err) {
    case HTTP1_INCOMPLETE:
        return "incomplete";
    case HTTP1_E_METHOD_CHAR:
        return "invalid character in method";
    case HTTP1_E_METHOD_CASE:
        return "method not in upper case";
    case HTTP1_E_REQUEST_LINE:
        return "malformed request line";
    case HTTP1_E_TARGET_CHAR:
        return "invalid character in request target";
    case HTTP1_E_TARGET_FORM:
        return "unsupported request target form";
    case HTTP1_E_VERSION:
        return "malformed HTTP version";
    case HTTP1_E_BARE_LF:
        return "bare LF";
    case HTTP1_E_BARE_CR:
        return "bare CR";
    case HTTP1_E_LEADING_WS:
        return "whitespace before the first header";
    case HTTP1_E_OBS_FOLD:
        return "obsolete line folding";
    case HTTP1_E_NO_COLON:
        return "header line without colon";
    case HTTP1_E_WS_BEFORE_COLON:
        return "whitespace before colon";
    case HTTP1_E_EMPTY_NAME:
        return "empty header name";
    case HTTP1_E_NAME_CHAR:
        return "invalid character in header name";
    case HTTP1_E_VALUE_CHAR:
        return "invalid character in header value";
    case HTTP1_E_CL_INVALID:
        return "invalid Content-Length";
    case HTTP1_E_CL_OVERFLOW:
        return "Content-Length too large";
    case HTTP1_E_CL_DIFFERENT:
        return "conflicting Content-Length";
    case HTTP1_E_CL_AND_TE:
        return "both Content-Length and Transfer-Encoding";
    case HTTP1_E_TE_SYNTAX:
        return "malformed Transfer-Encoding";
    case HTTP1_E_TE_NOT_CHUNKED_LAST:
        return "Transfer-Encoding does not end in chunked";
    case HTTP1_E_TE_CHUNKED_TWICE:
        return "chunked applied twice";
    case HTTP1_E_TE_HTTP10:
        return "Transfer-Encoding in HTTP/1.0";
    case HTTP1_E_HOST_MISSING:
        return "missing Host";
    case HTTP1_E_HOST_REPEATED:
        return "repeated Host";
    case HTTP1_E_HOST_INVALID:
        return "invalid Host";
    case HTTP1_E_CHUNK_SIZE:
        return "invalid chunk size";
    case HTTP1_E_CHUNK_OVERFLOW:
        return "chunk size too large";
    case HTTP1_E_CHUNK_EXT:
        return "invalid chunk extension";
    case HTTP1_E_CHUNK_EXT_TOO_LONG:
        return "chunk extension too long";
    case HTTP1_E_CHUNK_CRLF:
        return "chunk data not followed by CRLF";
    case HTTP1_E_TRAILER_TOO_LARGE:
        return "trailer section too large";
    case HTTP1_E_PATH:
        return "invalid path";
    case HTTP1_E_PATH_BACKSLASH:
        return "backslash in path";
    case HTTP1_E_PATH_ENCODED_SLASH:
        return "encoded slash in path";
    case HTTP1_E_PATH_PERCENT:
        return "invalid percent-encoding in path";
    case HTTP1_E_BODY_TOO_LARGE:
        return "body too large";
    case HTTP1_E_TARGET_TOO_LONG:
        return "request target too long";
    case HTTP1_E_HEAD_TOO_LARGE:
        return "header section too large";
    case HTTP1_E_TOO_MANY_HEADERS:
        return "too many headers";
    case HTTP1_E_TE_UNKNOWN:
        return "unsupported transfer coding";
    case HTTP1_E_CONNECT:
        return "CONNECT not supported";
    case HTTP1_E_VERSION_UNSUPPORTED:
        return "HTTP version not supported";
    case HTTP1_E_STATUS:
        return "invalid status code";
    case HTTP1_E_REASON_CHAR:
        return "invalid character in reason phrase";
    case HTTP1_E_SERIALIZE:
        return "invalid field for serialization";
    case HTTP1_E_NOMEM:
        return "out of memory";
    default:
        return "unknown error";
    }
}

static void limits_resolve(const struct http1_limits *lim, struct http1_limits *out)
{
    static const struct http1_limits none;
    if (!lim)
        lim = &none;
    out->max_header_bytes =
        lim->max_header_bytes ? lim->max_header_bytes : HTTP1_DEFAULT_MAX_HEADER_BYTES;
    out->max_headers = lim->max_headers ? lim->max_headers : HTTP1_DEFAULT_MAX_HEADERS;
    out->max_target = lim->max_target ? lim->max_target : HTTP1_DEFAULT_MAX_TARGET;
    out->max_chunk_ext = lim->max_chunk_ext ? lim->max_chunk_ext : HTTP1_DEFAULT_MAX_CHUNK_EXT;
    out->max_body_bytes = lim->max_body_bytes;
}

bool http1_token_eq(const char *a, size_t alen, const char *b)
{
    for (size_t i = 0; i < alen; i++) {
        if (!b[i] || lower_tab[(unsigned char)a[i]] != lower_tab[(unsigned char)b[i]])
            return false;
    }
    return b[alen] == '\0';
}

const struct http1_header *http1_header_find(const struct http1_header *h, size_t n,
                                             const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (http1_token_eq(h[i].name, h[i].name_len, name))
            return &h[i];
    }
    return NULL;
}

bool http1_list_has(const char *value, size_t len, const char *tok)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (is_ows((unsigned char)value[i]) || value[i] == ','))
            i++;
        size_t start = i;
        while (i < len && value[i] != ',')
            i++;
        size_t end = i;
        while (end > start && is_ows((unsigned char)value[end - 1]))
            end--;
        if (end > start && http1_token_eq(value + start, end - start, tok))
            return true;
    }
    return false;
}

/* port = 1..5 digits, <= 65535 */
static bool port_valid(const char *p, size_t len)
{
    if (len == 0 || len > 5)
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    return v <= 65535;
}

bool http1_host_valid(const char *host, size_t len)
{
    if (len == 0)
        return true;
    size_t i;
    if (host[0] == '[') {
        bool colon = false;
        for (i = 1; i < len && host[i] != ']'; i++) {
            unsigned char c = (unsigned char)host[i];
            if (c == ':')
                colon = true;
            else if (hexval(c) < 0 && c != '.')
                return false;
        }
        if (i == len || !colon || i < 3)
            return false;
        i++; /* past ']' */
    } else {
        for (i = 0; i < len && (cclass[(unsigned char)host[i]] & C_HOST); i++)
            ;
        if (i == 0)
            return false;
    }
    if (i == len)
        return true;
    if (host[i] != ':')
        return false;
    return port_valid(host + i + 1, len - i - 1);
}

/* ---- start lines ---------------------------------------------------------- */

static enum http1_method method_from(const char *m, size_t len)
{
    switch (len) {
    case 3:
        if (!memcmp(m, "GET", 3))
            return HTTP1_METHOD_GET;
        if (!memcmp(m, "PUT", 3))
            return HTTP1_METHOD_PUT;
        break;
    case 4:
        if (!memcmp(m, "HEAD", 4))
            return HTTP1_METHOD_HEAD;
        if (!memcmp(m, "POST", 4))
            return HTTP1_METHOD_POST;
        break;
    case 5:
        if (!memcmp(m, "PATCH", 5))
            return HTTP1_METHOD_PATCH;
        if (!memcmp(m, "TRACE", 5))
            return HTTP1_METHOD_TRACE;
        break;
    case 6:
        if (!memcmp(m, "DELETE", 6))
            return HTTP1_METHOD_DELETE;
        break;
    case 7:
        if (!memcmp(m, "OPTIONS", 7))
            return HTTP1_METHOD_OPTIONS;
        if (!memcmp(m, "CONNECT", 7))
            return HTTP1_METHOD_CONNECT;
        break;
    default:
        break;
    }
    return HTTP1_METHOD_OTHER;
}

/* "HTTP/" DIGIT "." DIGIT; returns the minor (0 or 1) or an error. */
static int parse_version(const char *v, size_t len)
{
    if (len != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' || v[5] < '0' || v[5] > '9' ||
        v[7] < '0' || v[7] > '9')
        return HTTP1_E_VERSION;
    if (v[5] != '1')
        return HTTP1_E_VERSION_UNSUPPORTED;
    return v[7] == '0' ? 0 : 1;
}

/* A byte that is not allowed where it stands: CR gets its own name. */
static inline int bad_byte(unsigned char c, int err)
{
    return c == '\r' ? HTTP1_E_BARE_CR : err;
}

/* Splits "scheme://authority/path?query" (absolute-form). */
static int parse_absolute(struct http1_request *req)
{
    const char *t = req->target, *end = t + req->target_len;
    const char *colon = memchr(t, ':', req->target_len);
    if (!colon || end - colon < 3 || colon[1] != '/' || colon[2] != '/')
        return HTTP1_E_TARGET_FORM;
    size_t slen = (size_t)(colon - t);
    if (!http1_token_eq(t, slen, "http") && !http1_token_eq(t, slen, "https"))
        return HTTP1_E_TARGET_FORM;
    const char *auth = colon + 3, *p = auth;
    while (p < end && *p != '/' && *p != '?')
        p++;
    size_t alen = (size_t)(p - auth);
    if (alen == 0 || memchr(auth, '@', alen) || !http1_host_valid(auth, alen))
        return HTTP1_E_HOST_INVALID;
    req->form = HTTP1_TARGET_ABSOLUTE;
    req->scheme = t;
    req->scheme_len = slen;
    req->host = auth;
    req->host_len = alen;
    if (p == end || *p == '?') {
        req->path = "/";
        req->path_len = 1;
    } else {
        const char *q = memchr(p, '?', (size_t)(end - p));
        req->path = p;
        req->path_len = (size_t)((q ? q : end) - p);
    }
    const char *q = memchr(p, '?', (size_t)(end - p));
    if (q) {
        req->query = q + 1;
        req->query_len = (size_t)(end - q - 1);
    }
    return 0;
}

/* Parses and checks the request line buf[0..end) (without its CRLF). */
static int parse_request_line(const char *buf, size_t end, const struct http1_limits *lim,
                              struct http1_request *req)
{
    size_t i = 0;
    while (i < end && is_tchar((unsigned char)buf[i]))
        i++;
    if (i == end)
        return HTTP1_E_REQUEST_LINE;
    if (buf[i] != ' ')
        return bad_byte((unsigned char)buf[i], HTTP1_E_METHOD_CHAR);
    if (i == 0)
        return HTTP1_E_REQUEST_LINE;
    /* Methods are case-sensitive (RFC 9110 9.1) and every registered one
     * is upper case: "get" is no GET to Ferry, but backends that upper-case
     * the method (Werkzeug, Rails, PHP frameworks) take it for one. Routes
     * matched by method and the response framing of HEAD would then
     * disagree with the backend ("head" answered without a body, read by
     * Ferry as one), so such a method is refused, as nginx does. */
    req->method_str = buf;
    req->method_len = i;
    req->method = method_from(buf, i); /* the known ones are upper case */
    for (size_t k = 0; req->method == HTTP1_METHOD_OTHER && k < i; k++) {
        if ((unsigned char)(buf[k] - 'a') < 26)
            return HTTP1_E_METHOD_CASE;
    }

    size_t t = ++i;
    while (i < end && (cclass[(unsigned char)buf[i]] & C_TARGET))
        i++;
    if (i - t > lim->max_target)
        return HTTP1_E_TARGET_TOO_LONG;
    if (i == end)
        return HTTP1_E_REQUEST_LINE;
    if (buf[i] != ' ')
        return bad_byte((unsigned char)buf[i], HTTP1_E_TARGET_CHAR);
    if (i == t)
        return HTTP1_E_REQUEST_LINE;
    req->target = buf + t;
    req->target_len = i - t;

    size_t v = ++i;
    for (; i < end; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c == ' ')
            return HTTP1_E_REQUEST_LINE;
        if (c == '\r')
            return HTTP1_E_BARE_CR;
    }
    int minor = parse_version(buf + v, end - v);
    if (minor < 0)
        return minor;
    req->version_minor = minor;

    if (req->method == HTTP1_METHOD_CONNECT)
        return HTTP1_E_CONNECT;
    req->scheme = NULL;
    req->scheme_len = 0;
    req->query = NULL;
    req->query_len = 0;
    req->host = NULL;
    req->host_len = 0;
    if (req->target[0] == '/') {
        const char *q = memchr(req->target, '?', req->target_len);
        req->form = HTTP1_TARGET_ORIGIN;
        req->path = req->target;
        req->path_len = q ? (size_t)(q - req->target) : req->target_len;
        if (q) {
            req->query = q + 1;
            req->query_len = req->target_len - req->path_len - 1;
        }
        return 0;
    }
    if (req->target_len == 1 && req->target[0] == '*') {
        if (req->method != HTTP1_METHOD_OPTIONS)
            return HTTP1_E_TARGET_FORM;
        req->form = HTTP1_TARGET_ASTERISK;
        req->path = req->target;
        req->path_len = 1;
        return 0;
    }
    return parse_absolute(req);
}

/* Parses the status line buf[0..end). */
static int parse_status_line(const char *buf, size_t end, struct http1_response *resp)
{
    if (end < 12 || buf[8] != ' ') {
        /* Version first, so "HTTP/2 200" says version. */
        const char *sp = memchr(buf, ' ', end);
        int r = parse_version(buf, sp ? (size_t)(sp - buf) : end);
        return r < 0 ? r : HTTP1_E_STATUS;
    }
    int minor = parse_version(buf, 8);
    if (minor < 0)
        return minor;
    resp->version_minor = minor;
    const char *s = buf + 9;
    if (s[0] < '1' || s[0] > '5' || s[1] < '0' || s[1] > '9' || s[2] < '0' || s[2] > '9')
        return HTTP1_E_STATUS;
    resp->status = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    resp->reason = buf + end;
    resp->reason_len = 0;
    if (end == 12)
        return 0; /* "HTTP/1.1 200" without SP and reason: tolerated */
    if (buf[12] != ' ')
        return HTTP1_E_STATUS;
    for (size_t i = 13; i < end; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (!(cclass[c] & C_VALUE) && !is_ows(c))
            return bad_byte(c, HTTP1_E_REASON_CHAR);
    }
    resp->reason = buf + 13;
    resp->reason_len = end - 13;
    return 0;
}

/* ---- field lines ---------------------------------------------------------- */

/* Framing and connection facts gathered over the field lines. */
struct fields {
    bool has_cl, has_te, chunked, te_last_chunked, te_unknown;
    bool conn_close, conn_keep_alive, conn_upgrade;
    bool has_upgrade, up_websocket, up_h2c, expect_continue;
    size_t host_count;
    const char *host;
    size_t host_len;
    uint64_t cl;
};

/* Are the 8 bytes at p all allowed in a field value without HTAB (no
 * byte below 0x20, no DEL; obs-text is allowed)? Word-at-a-time: a byte
 * b < 0x20 borrows into its top bit in x - 0x20..20 while ~x keeps it;
 * DEL is the zero byte of x ^ 0x7f..7f. A false "no" (an HTAB) only sends
 * the caller to its byte loop. */
static inline bool value_word_ok(const char *p)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    uint64_t x;
    memcpy(&x, p, sizeof(x));
    uint64_t ctl = (x - ones * 0x20) & ~x & highs;
    uint64_t y = x ^ (ones * 0x7f);
    uint64_t del = (y - ones) & ~y & highs;
    return (ctl | del) == 0;
}

/* Parses one field line p[0..len) (no CRLF) into h. */
static int parse_field_line(const char *p, size_t len, bool first, struct http1_header *h)
{
    unsigned char c0 = (unsigned char)p[0];
    if (is_ows(c0))
        return first ? HTTP1_E_LEADING_WS : HTTP1_E_OBS_FOLD;
    size_t i = 0;
    while (i < len && is_tchar((unsigned char)p[i]))
        i++;
    if (i == len)
        return HTTP1_E_NO_COLON;
    if (p[i] != ':') {
        unsigned char c = (unsigned char)p[i];
        bool colon_later = memchr(p + i, ':', len - i) != NULL;
        if (c == '\r')
            return HTTP1_E_BARE_CR;
        if (!colon_later)
            return HTTP1_E_NO_COLON;
        return is_ows(c) ? HTTP1_E_WS_BEFORE_COLON : HTTP1_E_NAME_CHAR;
    }
    if (i == 0)
        return HTTP1_E_EMPTY_NAME;
    h->name = p;
    h->name_len = i;
    i++;
    while (i < len && is_ows((unsigned char)p[i]))
        i++;
    size_t v = i;
    while (len - i >= 8 && value_word_ok(p + i))
        i += 8;
    while (i < len && (cclass[(unsigned char)p[i]] & C_FIELD))
        i++;
    if (i < len)
        return bad_byte((unsigned char)p[i], HTTP1_E_VALUE_CHAR);
    while (i > v && is_ows((unsigned char)p[i - 1]))
        i--;
    h->value = p + v;
    h->value_len = i - v;
    return 0;
}

static int parse_content_length(const struct http1_header *h, struct fields *f)
{
    if (h->value_len == 0)
        return HTTP1_E_CL_INVALID;
    uint64_t v = 0;
    for (size_t i = 0; i < h->value_len; i++) {
        unsigned char c = (unsigned char)h->value[i];
        if (c < '0' || c > '9')
            return HTTP1_E_CL_INVALID;
        if (v > (UINT64_C(0x7fffffffffffffff) - (c - '0')) / 10)
            return HTTP1_E_CL_OVERFLOW;
        v = v * 10 + (c - '0');
    }
    if (f->has_cl && f->cl != v)
        return HTTP1_E_CL_DIFFERENT;
    f->has_cl = true;
    f->cl = v;
    return 0;
}

/* One Transfer-Encoding line: a list of codings, each a bare token. */
static int parse_transfer_encoding(const struct http1_header *h, struct fields *f)
{
    const char *v = h->value;
    size_t len = h->value_len, i = 0;
    f->has_te = true;
    for (;;) {
        while (i < len && is_ows((unsigned char)v[i]))
            i++;
        size_t start = i;
        while (i < len && is_tchar((unsigned char)v[i]))
            i++;
        size_t end = i;
        while (i < len && is_ows((unsigned char)v[i]))
            i++;
        if (end == start || (i < len && v[i] != ','))
            return HTTP1_E_TE_SYNTAX;
        if (http1_token_eq(v + start, end - start, "chunked")) {
            if (f->chunked)
                return HTTP1_E_TE_CHUNKED_TWICE;
            f->chunked = true;
            f->te_last_chunked = true;
        } else {
            f->te_unknown = true;
            f->te_last_chunked = false;
        }
        if (i == len)
            return 0;
        i++; /* ',' */
    }
}

static void parse_connection(const struct http1_header *h, struct fields *f)
{
    if (http1_list_has(h->value, h->value_len, "close"))
        f->conn_close = true;
    if (http1_list_has(h->value, h->value_len, "keep-alive"))
        f->conn_keep_alive = true;
    if (http1_list_has(h->value, h->value_len, "upgrade"))
        f->conn_upgrade = true;
}

/* Looks at the fields that matter to framing and routing. */
static int note_field(const struct http1_header *h, bool request, struct fields *f)
{
    switch (h->name_len) {
    case 4:
        if (request && http1_token_eq(h->name, 4, "host")) {
            if (++f->host_count > 1)
                return HTTP1_E_HOST_REPEATED;
            if (!http1_host_valid(h->value, h->value_len))
                return HTTP1_E_HOST_INVALID;
            f->host = h->value;
            f->host_len = h->value_len;
        }
        break;
    case 6:
        if (request && http1_token_eq(h->name, 6, "expect") &&
            http1_token_eq(h->value, h->value_len, "100-continue"))
            f->expect_continue = true;
        break;
    case 7:
        if (http1_token_eq(h->name, 7, "upgrade")) {
            f->has_upgrade = true;
            if (http1_list_has(h->value, h->value_len, "websocket"))
                f->up_websocket = true;
            if (http1_list_has(h->value, h->value_len, "h2c"))
                f->up_h2c = true;
        }
        break;
    case 10:
        if (http1_token_eq(h->name, 10, "connection"))
            parse_connection(h, f);
        break;
    case 14:
        if (http1_token_eq(h->name, 14, "content-length"))
            return parse_content_length(h, f);
        break;
    case 17:
        if (http1_token_eq(h->name, 17, "transfer-encoding"))
            return parse_transfer_encoding(h, f);
        break;
    default:
        break;
    }
    return 0;
}

/* Parses the field lines in buf[start..end) (each ending in CRLF, no bare
 * LF: the scan checked). */
static int parse_fields(const char *buf, size_t start, size_t end, size_t max_headers, bool request,
                        struct http1_header *headers, size_t *nheaders, struct fields *f)
{
    size_t n = 0, pos = start;
    memset(f, 0, sizeof(*f));
    while (pos < end) {
        const char *lf = memchr(buf + pos, '\n', end - pos);
        size_t eol = (size_t)(lf - buf) - 1; /* the CR */
        if (n == max_headers)
            return HTTP1_E_TOO_MANY_HEADERS;
        int r = parse_field_line(buf + pos, eol - pos, n == 0, &headers[n]);
        if (r < 0)
            return r;
        r = note_field(&headers[n], request, f);
        if (r < 0)
            return r;
        n++;
        pos = eol + 2;
    }
    *nheaders = n;
    return 0;
}

/* Checks shared by both directions once all fields are known. */
static int check_te(const struct fields *f, int version_minor)
{
    if (!f->has_te)
        return 0;
    if (f->has_cl)
        return HTTP1_E_CL_AND_TE;
    if (version_minor == 0)
        return HTTP1_E_TE_HTTP10;
    if (!f->te_last_chunked)
        return HTTP1_E_TE_NOT_CHUNKED_LAST;
    if (f->te_unknown)
        return HTTP1_E_TE_UNKNOWN;
    return 0;
}

static bool keep_alive_of(const struct fields *f, int version_minor)
{
    if (f->conn_close)
        return false;
    return version_minor >= 1 || f->conn_keep_alive;
}

/* ---- the head scan --------------------------------------------------------- */

/*
 * Finds the end of a head in buf[0..len), resuming from st. Returns the
 * head length, HTTP1_INCOMPLETE, an error, or 0 when the start line has
 * just completed (st->first_end set): the caller checks it, sets
 * st->first_done and calls again.
 */
static ssize_t scan_head(const char *buf, size_t len, const struct http1_limits *lim,
                         struct http1_scan *st, bool request)
{
    size_t window = len < lim->max_header_bytes ? len : lim->max_header_bytes;
    size_t pos = st->scan;
    if (request && !st->first_done) {
        /* Byte by byte until the request line ends: the target length is
         * decided before the line is complete. */
        for (; pos < window; pos++) {
            unsigned char c = (unsigned char)buf[pos];
            if (c == '\n')
                break;
            if (st->phase == 0 && c == ' ') {
                st->phase = 1;
                st->tstart = pos + 1;
            } else if (st->phase == 1) {
                if (c == ' ' || c == '\r')
                    st->phase = 2;
                else if (pos + 1 - st->tstart > lim->max_target)
                    return HTTP1_E_TARGET_TOO_LONG;
            }
        }
        st->scan = pos;
        if (pos == window)
            return len >= lim->max_header_bytes ? HTTP1_E_HEAD_TOO_LARGE : HTTP1_INCOMPLETE;
    }
    for (;;) {
        const char *lf = pos < window ? memchr(buf + pos, '\n', window - pos) : NULL;
        if (!lf) {
            st->scan = window;
            return len >= lim->max_header_bytes ? HTTP1_E_HEAD_TOO_LARGE : HTTP1_INCOMPLETE;
        }
        size_t i = (size_t)(lf - buf);
        if (i == st->line || buf[i - 1] != '\r')
            return HTTP1_E_BARE_LF;
        if (!st->first_done) {
            st->first_end = i - 1;
            st->line = st->scan = i + 1;
            return 0; /* caller checks the start line, then calls again */
        }
        if (i - 1 == st->line)
            return (ssize_t)(i + 1); /* the empty line */
        pos = st->line = i + 1;
        st->scan = pos;
    }
}

void http1_request_init(struct http1_request *req, struct http1_header *headers, size_t cap)
{
    memset(req, 0, sizeof(*req));
    req->headers = headers;
    req->headers_cap = cap;
}

void http1_response_init(struct http1_response *resp, struct http1_header *headers, size_t cap)
{
    memset(resp, 0, sizeof(*resp));
    resp->headers = headers;
    resp->headers_cap = cap;
}

/*
 * Both parsers: scan for the end of the head, checking the start line the
 * moment it completes (so a garbage line fails before max_header_bytes),
 * then parse the fields. When the start line completed in an earlier
 * call, parse_request_line/parse_status_line run again to re-derive its
 * views from the current buffer (it may have moved since then).
 */
ssize_t http1_parse_request(const char *buf, size_t len, const struct http1_limits *lim,
                            struct http1_request *req)
{
    struct http1_limits l;
    struct http1_scan *st = &req->scan_;
    bool line_parsed = false;
    ssize_t r;

    limits_resolve(lim, &l);
    while ((r = scan_head(buf, len, &l, st, true)) == 0) {
        int e = parse_request_line(buf, st->first_end, &l, req);
        if (e < 0)
            return e;
        st->first_done = true;
        line_parsed = true;
    }
    if (r < 0)
        return r;
    if (!line_parsed) {
        int e = parse_request_line(buf, st->first_end, &l, req);
        if (e < 0)
            return e; /* not reached: the line was checked when it completed */
    }

    struct fields f;
    size_t max = l.max_headers < req->headers_cap ? l.max_headers : req->headers_cap;
    int e = parse_fields(buf, st->first_end + 2, (size_t)r - 2, max, true, req->headers,
                         &req->nheaders, &f);
    if (e < 0)
        return e;
    e = check_te(&f, req->version_minor);
    if (e < 0)
        return e;
    if (f.host_count == 0 && req->version_minor == 1)
        return HTTP1_E_HOST_MISSING;
    if (req->form != HTTP1_TARGET_ABSOLUTE) {
        req->host = f.host;
        req->host_len = f.host_len;
    }
    req->content_length = 0;
    if (f.chunked) {
        req->body = HTTP1_BODY_CHUNKED;
    } else if (f.has_cl) {
        if (l.max_body_bytes && f.cl > l.max_body_bytes)
            return HTTP1_E_BODY_TOO_LARGE;
        req->body = HTTP1_BODY_LENGTH;
        req->content_length = f.cl;
    } else {
        req->body = HTTP1_BODY_NONE;
    }
    req->keep_alive = keep_alive_of(&f, req->version_minor);
    req->expect_continue = f.expect_continue;
    /* RFC 9110 7.8: a server must ignore Upgrade in an HTTP/1.0 request
     * (the 1.0 client cannot know the headers are hop-by-hop). */
    req->upgrade = req->version_minor >= 1 && f.conn_upgrade && f.has_upgrade;
    req->upgrade_websocket = req->upgrade && f.up_websocket;
    req->upgrade_h2c = f.up_h2c;
    return r;
}

ssize_t http1_parse_response(const char *buf, size_t len, const struct http1_limits *lim,
                             enum http1_method request_method, struct http1_response *resp)
{
    struct http1_limits l;
    struct http1_scan *st = &resp->scan_;
    bool line_parsed = false;
    ssize_t r;

    limits_resolve(lim, &l);
    while ((r = scan_head(buf, len, &l, st, false)) == 0) {
        int e = parse_status_line(buf, st->first_end, resp);
        if (e < 0)
            return e;
        st->first_done = true;
        line_parsed = true;
    }
    if (r < 0)
        return r;
    if (!line_parsed) {
        int e = parse_status_line(buf, st->first_end, resp);
        if (e < 0)
            return e;
    }

    struct fields f;
    size_t max = l.max_headers < resp->headers_cap ? l.max_headers : resp->headers_cap;
    int e = parse_fields(buf, st->first_end + 2, (size_t)r - 2, max, false, resp->headers,
                         &resp->nheaders, &f);
    if (e < 0)
        return e;
    e = check_te(&f, resp->version_minor);
    if (e < 0)
        return e;

    int s = resp->status;
    resp->has_content_length = f.has_cl;
    resp->content_length = f.has_cl ? f.cl : 0;
    resp->keep_alive = keep_alive_of(&f, resp->version_minor);
    resp->upgrade = s == 101 && f.has_upgrade;
    if (request_method == HTTP1_METHOD_HEAD || (s >= 100 && s < 200) || s == 204 || s == 304 ||
        (request_method == HTTP1_METHOD_CONNECT && s >= 200 && s < 300)) {
        resp->body = HTTP1_BODY_NONE;
    } else if (f.chunked) {
        resp->body = HTTP1_BODY_CHUNKED;
    } else if (f.has_cl) {
        resp->body = HTTP1_BODY_LENGTH;
    } else {
        resp->body = HTTP1_BODY_CLOSE;
        resp->keep_alive = false;
    }
    return r;
}

/* ---- chunked coding ------------------------------------------------------- */

enum {
    CH_SIZE_START, /* first hex digit of a chunk-size */
    CH_SIZE,       /* more hex digits */
    CH_SIZE_WS,    /* BWS after the size: only ';' may follow */
    CH_EXT,        /* chunk-ext, up to CR */
    CH_SIZE_LF,    /* CR seen after the size line */
    CH_DATA,
    CH_DATA_CR, /* CRLF after chunk data */
    CH_DATA_LF,
    CH_TRAILER_START, /* start of a trailer line or the final CRLF */
    CH_TRAILER_NAME,
    CH_TRAILER_VALUE,
    CH_TRAILER_LF,
    CH_END_LF, /* CR of the final empty line seen */
    CH_DONE,
    CH_FAILED, /* dec->error was returned: every later call returns it */
};

void http1_chunked_init(struct http1_chunked *dec, const struct http1_limits *lim)
{
    struct http1_limits l;
    limits_resolve(lim, &l);
    memset(dec, 0, sizeof(*dec));
    dec->state = CH_SIZE_START;
    dec->max_chunk_ext = l.max_chunk_ext;
    dec->max_trailer_bytes = l.max_header_bytes;
    dec->max_trailers = l.max_headers;
    dec->max_body = l.max_body_bytes;
}

bool http1_chunked_done(const struct http1_chunked *dec)
{
    return dec->state == CH_DONE;
}

/* One byte of a chunk-size line (size, BWS, extensions, CRLF) or of the
 * CRLF after a chunk's data. Returns 0 or an HTTP1_E_* error. */
static inline int chunk_line_byte(struct http1_chunked *dec, unsigned char c)
{
    int v;
    switch (dec->state) {
    case CH_SIZE_START:
        v = hexval(c);
        if (v < 0)
            return c == '\n' ? HTTP1_E_BARE_LF : HTTP1_E_CHUNK_SIZE;
        dec->remaining = (uint64_t)v;
        dec->digits = 1;
        dec->ext_len = 0;
        dec->state = CH_SIZE;
        return 0;
    case CH_SIZE:
        v = hexval(c);
        if (v >= 0) {
            /* 16 digits at most, and the value stays below 2^63 */
            if (++dec->digits > 16 || dec->remaining > (UINT64_C(0x7fffffffffffffff) >> 4))
                return HTTP1_E_CHUNK_OVERFLOW;
            dec->remaining = dec->remaining << 4 | (uint64_t)v;
        } else if (c == '\r') {
            dec->state = CH_SIZE_LF;
        } else if (c == ';') {
            dec->state = CH_EXT;
            dec->ext_len = 1;
        } else if (is_ows(c)) {
            dec->state = CH_SIZE_WS;
            dec->ext_len = 1;
        } else {
            return c == '\n' ? HTTP1_E_BARE_LF : HTTP1_E_CHUNK_SIZE;
        }
        return 0;
    case CH_SIZE_WS:
        if (c == ';')
            dec->state = CH_EXT;
        else if (c == '\n')
            return HTTP1_E_BARE_LF;
        else if (!is_ows(c))
            return HTTP1_E_CHUNK_SIZE;
        return ++dec->ext_len > dec->max_chunk_ext ? HTTP1_E_CHUNK_EXT_TOO_LONG : 0;
    case CH_EXT:
        if (c == '\r') {
            dec->state = CH_SIZE_LF;
            return 0;
        }
        if (c == '\n')
            return HTTP1_E_BARE_LF;
        if (!(cclass[c] & C_VALUE) && !is_ows(c))
            return HTTP1_E_CHUNK_EXT;
        return ++dec->ext_len > dec->max_chunk_ext ? HTTP1_E_CHUNK_EXT_TOO_LONG : 0;
    case CH_SIZE_LF:
        if (c != '\n')
            return HTTP1_E_BARE_CR;
        if (dec->remaining == 0) {
            dec->state = CH_TRAILER_START; /* this LF counts as a trailer byte */
            return ++dec->trailer_bytes > dec->max_trailer_bytes ? HTTP1_E_TRAILER_TOO_LARGE : 0;
        }
        if (dec->max_body && dec->remaining > dec->max_body - dec->total)
            return HTTP1_E_BODY_TOO_LARGE;
        dec->state = CH_DATA;
        return 0;
    case CH_DATA_CR:
        if (c != '\r')
            return c == '\n' ? HTTP1_E_BARE_LF : HTTP1_E_CHUNK_CRLF;
        dec->state = CH_DATA_LF;
        return 0;
    default: /* CH_DATA_LF */
        if (c != '\n')
            return HTTP1_E_BARE_CR;
        dec->state = CH_SIZE_START;
        return 0;
    }
}

/* One byte of the trailer section or of the final CRLF (which moves the
 * decoder to CH_DONE). Returns 0 or an HTTP1_E_* error. */
static inline int trailer_byte(struct http1_chunked *dec, unsigned char c)
{
    switch (dec->state) {
    case CH_TRAILER_START:
        if (c == '\r') {
            dec->state = CH_END_LF;
            return 0;
        }
        if (c == '\n')
            return HTTP1_E_BARE_LF;
        if (is_ows(c))
            return dec->trailer_lines ? HTTP1_E_OBS_FOLD : HTTP1_E_LEADING_WS;
        if (c == ':')
            return HTTP1_E_EMPTY_NAME;
        if (!is_tchar(c))
            return HTTP1_E_NAME_CHAR;
        if (++dec->trailer_lines > dec->max_trailers)
            return HTTP1_E_TRAILER_TOO_LARGE;
        dec->state = CH_TRAILER_NAME;
        return 0;
    case CH_TRAILER_NAME:
        if (c == ':')
            dec->state = CH_TRAILER_VALUE;
        else if (is_ows(c))
            return HTTP1_E_WS_BEFORE_COLON;
        else if (c == '\r')
            return HTTP1_E_NO_COLON;
        else if (c == '\n')
            return HTTP1_E_BARE_LF;
        else if (!is_tchar(c))
            return HTTP1_E_NAME_CHAR;
        return 0;
    case CH_TRAILER_VALUE:
        if (c == '\r')
            dec->state = CH_TRAILER_LF;
        else if (c == '\n')
            return HTTP1_E_BARE_LF;
        else if (!(cclass[c] & C_VALUE) && !is_ows(c))
            return HTTP1_E_VALUE_CHAR;
        return 0;
    case CH_TRAILER_LF:
        if (c != '\n')
            return HTTP1_E_BARE_CR;
        dec->state = CH_TRAILER_START;
        return 0;
    default: /* CH_END_LF */
        if (c != '\n')
            return HTTP1_E_BARE_CR;
        dec->state = CH_DONE;
        return 0;
    }
}

/* trailer_byte, with the trailer section's bytes (from the LF that ends
 * the last-chunk line to the CR of the final line) counted against its
 * limit. */
static inline int chunk_trailer_byte(struct http1_chunked *dec, unsigned char c)
{
    int rc = trailer_byte(dec, c);
    if (rc == 0 && dec->state != CH_DONE && ++dec->trailer_bytes > dec->max_trailer_bytes)
        return HTTP1_E_TRAILER_TOO_LARGE;
    return rc;
}

/*
 * Advances the decoder over buf[0..len). Stops after one run of payload
 * when the next byte would start another, or when the body is done, so
 * the payload of one call is one contiguous range. Returns the bytes
 * consumed or an error (the decoder is then unusable).
 */
ssize_t http1_chunked_decode(struct http1_chunked *dec, const char *buf, size_t len,
                             size_t *data_off, size_t *data_len)
{
    size_t i = 0;
    bool have_data = false;

    *data_off = 0;
    *data_len = 0;
    if (dec->state == CH_FAILED)
        return dec->error;
    while (i < len) {
        if (dec->state == CH_DONE)
            return (ssize_t)i;
        if (dec->state == CH_DATA) {
            if (have_data)
                return (ssize_t)i;
            size_t n = len - i;
            if (n > dec->remaining)
                n = (size_t)dec->remaining;
            *data_off = i;
            *data_len = n;
            have_data = true;
            dec->remaining -= n;
            dec->total += n;
            i += n;
            if (dec->remaining == 0)
                dec->state = CH_DATA_CR;
            continue;
        }
        unsigned char c = (unsigned char)buf[i++];
        int rc =
            dec->state < CH_TRAILER_START ? chunk_line_byte(dec, c) : chunk_trailer_byte(dec, c);
        if (rc < 0) {
            dec->state = CH_FAILED;
            dec->error = (int16_t)rc;
            return rc;
        }
        if (dec->state == CH_DONE)
            return (ssize_t)i;
    }
    return (ssize_t)i;
}

size_t http1_chunk_header(char *buf, uint64_t n)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t k = 0;
    do {
        tmp[k++] = hex[n & 15];
        n >>= 4;
    } while (n);
    for (size_t i = 0; i < k; i++)
        buf[i] = tmp[k - 1 - i];
    buf[k] = '\r';
    buf[k + 1] = '\n';
    buf[k + 2] = '\0';
    return k + 2;
}

/* ---- serializer ---------------------------------------------------------- */

struct out {
    char *buf;
    size_t cap, len;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (n == 0)
        return;
    if (o->len < o->cap) {
        size_t room = o->cap - o->len;
        memcpy(o->buf + o->len, s, n < room ? n : room);
    }
    o->len += n;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_u64(struct out *o, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(o, tmp + i, sizeof(tmp) - i);
}

bool http1_field_text_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(cclass[c] & C_VALUE) && !is_ows(c))
            return false;
    }
    return true;
}

bool http1_token_ok(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_tchar((unsigned char)s[i]))
            return false;
    }
    return true;
}

static bool target_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!(cclass[(unsigned char)s[i]] & C_TARGET))
            return false;
    }
    return true;
}

static ssize_t finish_head(struct out *o, const struct http1_head_out *h)
{
    for (size_t i = 0; i < h->nheaders; i++) {
        const struct http1_header *f = &h->headers[i];
        if (!h->fields_checked &&
            (!http1_token_ok(f->name, f->name_len) || !http1_field_text_ok(f->value, f->value_len)))
            return HTTP1_E_SERIALIZE;
        if ((f->name_len == 14 && http1_token_eq(f->name, 14, "content-length")) ||
            (f->name_len == 17 && http1_token_eq(f->name, 17, "transfer-encoding")))
            continue;
        size_t need = f->name_len + f->value_len + 4;
        if (o->len < o->cap && o->cap - o->len >= need) {
            /* The common case, the head fits: two copies, four stores. */
            char *p = o->buf + o->len;
            memcpy(p, f->name, f->name_len);
            p += f->name_len;
            p[0] = ':';
            p[1] = ' ';
            memcpy(p + 2, f->value, f->value_len);
            p += 2 + f->value_len;
            p[0] = '\r';
            p[1] = '\n';
            o->len += need;
            continue;
        }
        put(o, f->name, f->name_len);
        put(o, ": ", 2);
        put(o, f->value, f->value_len);
        put(o, "\r\n", 2);
    }
    if (h->body == HTTP1_BODY_LENGTH) {
        puts_(o, "Content-Length: ");
        put_u64(o, h->content_length);
        put(o, "\r\n", 2);
    } else if (h->body == HTTP1_BODY_CHUNKED) {
        puts_(o, "Transfer-Encoding: chunked\r\n");
    }
    if (h->connection_close)
        puts_(o, "Connection: close\r\n");
    else if (h->connection_keep_alive)
        puts_(o, "Connection: keep-alive\r\n");
    put(o, "\r\n", 2);
    if (o->len < o->cap)
        o->buf[o->len] = '\0';
    else if (o->cap)
        o->buf[o->cap - 1] = '\0';
    return (ssize_t)o->len;
}

ssize_t http1_write_request_head(char *buf, size_t cap, const struct http1_head_out *h)
{
    struct out o = {buf, cap, 0};
    if (!http1_token_ok(h->method, h->method_len) || h->path_len == 0 ||
        !target_ok(h->path, h->path_len) || (h->query && !target_ok(h->query, h->query_len)))
        return HTTP1_E_SERIALIZE;
    put(&o, h->method, h->method_len);
    put(&o, " ", 1);
    put(&o, h->path, h->path_len);
    if (h->query) {
        put(&o, "?", 1);
        put(&o, h->query, h->query_len);
    }
    puts_(&o, " HTTP/1.1\r\n");
    return finish_head(&o, h);
}

ssize_t http1_write_response_head(char *buf, size_t cap, const struct http1_head_out *h)
{
    struct out o = {buf, cap, 0};
    char code[4];
    if (h->status < 100 || h->status > 599 || !http1_field_text_ok(h->reason, h->reason_len))
        return HTTP1_E_SERIALIZE;
    code[0] = (char)('0' + h->status / 100);
    code[1] = (char)('0' + h->status / 10 % 10);
    code[2] = (char)('0' + h->status % 10);
    code[3] = '\0';
    puts_(&o, "HTTP/1.1 ");
    put(&o, code, 3);
    put(&o, " ", 1);
    put(&o, h->reason, h->reason_len);
    put(&o, "\r\n", 2);
    return finish_head(&o, h);
}

const char *http1_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Content";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "";
    }
}

/* Moves one view from the old copy of the head to the new one. */
static const char *rebase_view(const char *v, const char *from, const char *to)
{
    return v ? to + (v - from) : NULL;
}

void http1_request_rebase(struct http1_request *req, const char *from, const char *to)
{
    req->method_str = rebase_view(req->method_str, from, to);
    req->target = rebase_view(req->target, from, to);
    req->path = rebase_view(req->path, from, to);
    req->query = rebase_view(req->query, from, to);
    req->scheme = rebase_view(req->scheme, from, to);
    req->host = rebase_view(req->host, from, to);
    for (size_t i = 0; i < req->nheaders; i++) {
        req->headers[i].name = rebase_view(req->headers[i].name, from, to);
        req->headers[i].value = rebase_view(req->headers[i].value, from, to);
    }
}
