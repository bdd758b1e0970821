/*
 * http1: strict HTTP/1.1 message heads (RFC 9110/9112), body framing, the
 * chunked transfer coding, and the serializer of the heads Ferry sends.
 *
 * Contract:
 * - Pure module: functions over bytes. No allocation, no I/O, no libevent,
 *   no coroutines; nothing here yields. Safe on any thread.
 * - Parsed views (method, target, header names and values, ...) point into
 *   the caller's buffer: they are valid while that buffer is unchanged.
 *   The header array is the caller's (http1_request_init); no allocation
 *   per header, ever.
 * - Parsers return the number of bytes consumed (> 0), HTTP1_INCOMPLETE, or
 *   a named negative error (enum http1_error). After an error the caller
 *   answers (http1_error_status) and closes: nothing more is parsed on
 *   that connection.
 * - Restartable: call http1_parse_request/_response again on the same
 *   struct with a longer buffer holding the same bytes plus new ones (the
 *   buffer may have moved, e.g. a new evbuffer_pullup). Lines already
 *   scanned are not rescanned (a resume offset kept in the struct), so a
 *   head trickled byte by byte costs O(n), and the result for a given byte
 *   sequence does not depend on how it was split.
 * - Limits are decided even while INCOMPLETE: a head with no end within
 *   max_header_bytes fails with HTTP1_E_HEAD_TOO_LARGE (431), a request
 *   target longer than max_target with HTTP1_E_TARGET_TOO_LONG (414), as
 *   soon as the bytes prove it.
 *
 * Policies (docs/http1.md has the reasons):
 * - Bare LF: rejected everywhere (request and status lines, field lines,
 *   chunk framing, trailers) with HTTP1_E_BARE_LF. A CR not followed by LF
 *   is HTTP1_E_BARE_CR.
 * - obs-fold, whitespace before the colon, a first field line starting with
 *   whitespace, CTL/DEL/NUL in names or values: rejected, each by name.
 * - Content-Length and Transfer-Encoding together: rejected. Repeated
 *   Content-Length lines with the same value collapse; a comma list is
 *   invalid. Transfer-Encoding: only `chunked`, once, last; any other
 *   coding is HTTP1_E_TE_UNKNOWN (501), TE in HTTP/1.0 is rejected.
 * - CONNECT is refused (501); authority-form targets are therefore never
 *   accepted. Asterisk-form only for OPTIONS. Absolute-form http/https
 *   only, no userinfo; its authority becomes the effective host.
 * - Any error from http1_parse_response (or a chunked body from upstream)
 *   is answered 502 by the proxy, whatever http1_error_status says.
 */
#ifndef FERRY_HTTP1_H
#define FERRY_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Negative results. HTTP1_INCOMPLETE is not an error: feed more bytes. */
enum http1_error {
    HTTP1_INCOMPLETE = -1,
    /* 400: request line */
    HTTP1_E_METHOD_CHAR = -10,  /* method not a token (CTL, NUL, DEL, separators) */
    HTTP1_E_REQUEST_LINE = -11, /* not "method SP target SP version", extra spaces */
    HTTP1_E_TARGET_CHAR = -12,  /* CTL, NUL, DEL, SP, '#' or non-ASCII in target */
    HTTP1_E_TARGET_FORM = -13,  /* not origin/absolute/asterisk(OPTIONS) form */
    HTTP1_E_VERSION = -14,      /* not HTTP/DIGIT.DIGIT */
    HTTP1_E_METHOD_CASE = -15,  /* a lowercase letter in the method ("get", "Head") */
    /* 400: line endings and field lines */
    HTTP1_E_BARE_LF = -20,         /* LF not preceded by CR */
    HTTP1_E_BARE_CR = -21,         /* CR not followed by LF */
    HTTP1_E_LEADING_WS = -22,      /* first field line starts with SP/HTAB */
    HTTP1_E_OBS_FOLD = -23,        /* a later field line starts with SP/HTAB */
    HTTP1_E_NO_COLON = -24,        /* field line without ':' */
    HTTP1_E_WS_BEFORE_COLON = -25, /* "Name :" */
    HTTP1_E_EMPTY_NAME = -26,      /* ": value" */
    HTTP1_E_NAME_CHAR = -27,       /* field name not a token */
    HTTP1_E_VALUE_CHAR = -28,      /* CTL (but HTAB), NUL or DEL in a value */
    /* 400: framing */
    HTTP1_E_CL_INVALID = -30,          /* empty, signed, hex, spaces, list... */
    HTTP1_E_CL_OVERFLOW = -31,         /* more than 2^63-1 */
    HTTP1_E_CL_DIFFERENT = -32,        /* two Content-Length lines that differ */
    HTTP1_E_CL_AND_TE = -33,           /* both Content-Length and Transfer-Encoding */
    HTTP1_E_TE_SYNTAX = -34,           /* empty element, parameters, not a token */
    HTTP1_E_TE_NOT_CHUNKED_LAST = -35, /* final coding is not chunked */
    HTTP1_E_TE_CHUNKED_TWICE = -36,
    HTTP1_E_TE_HTTP10 = -37, /* Transfer-Encoding in an HTTP/1.0 message */
    /* 400: Host */
    HTTP1_E_HOST_MISSING = -40, /* HTTP/1.1 request without Host */
    HTTP1_E_HOST_REPEATED = -41,
    HTTP1_E_HOST_INVALID = -42, /* Host or absolute-form authority syntax */
    /* 400: chunked body (http1_chunked_decode) */
    HTTP1_E_CHUNK_SIZE = -50,     /* empty, 0x, sign, spaces, non-hex */
    HTTP1_E_CHUNK_OVERFLOW = -51, /* more than 16 hex digits or > 2^63-1 */
    HTTP1_E_CHUNK_EXT = -52,      /* CTL in a chunk extension */
    HTTP1_E_CHUNK_EXT_TOO_LONG = -53,
    HTTP1_E_CHUNK_CRLF = -54, /* chunk data not followed by CRLF */
    HTTP1_E_TRAILER_TOO_LARGE = -55,
    /* 400: path and host rules (headers.c) */
    HTTP1_E_PATH = -60,               /* does not start with '/' */
    HTTP1_E_PATH_BACKSLASH = -61,     /* '\' or %5C */
    HTTP1_E_PATH_ENCODED_SLASH = -62, /* %2F */
    HTTP1_E_PATH_PERCENT = -63,       /* '%' not followed by two hex digits, or %00 */
    /* 413, 414, 431 */
    HTTP1_E_BODY_TOO_LARGE = -70,   /* 413: Content-Length or chunked total over max_body_bytes */
    HTTP1_E_TARGET_TOO_LONG = -71,  /* 414 */
    HTTP1_E_HEAD_TOO_LARGE = -72,   /* 431: no head end within max_header_bytes */
    HTTP1_E_TOO_MANY_HEADERS = -73, /* 431 */
    /* 501, 505 */
    HTTP1_E_TE_UNKNOWN = -80,          /* 501: a coding other than chunked */
    HTTP1_E_CONNECT = -81,             /* 501: CONNECT is not supported */
    HTTP1_E_VERSION_UNSUPPORTED = -82, /* 505: major version not 1 */
    /* responses only (always 502) */
    HTTP1_E_STATUS = -90,      /* status code not 3 digits in 100..599 */
    HTTP1_E_REASON_CHAR = -91, /* CTL in the reason phrase */
    /* serializer */
    HTTP1_E_SERIALIZE = -99, /* CR, LF or NUL in a field given to the serializer */
    /* body_move: out of memory moving a body (Ferry's fault, not the peer's; 503) */
    HTTP1_E_NOMEM = -100,
};

/* The HTTP status answering a request-side error (400, 413, 414, 431, 501,
 * 505); 502 for the response-only errors. Not for HTTP1_INCOMPLETE. */
int http1_error_status(int err);
/* A short, static, printable reason ("bare LF in head") for logs and error
 * bodies. Never NULL, also for unknown values. */
const char *http1_error_str(int err);

/* Limits on what the parsers accept. Zero in a field means its default. */
struct http1_limits {
    size_t max_header_bytes; /* whole head incl. start line and final CRLF (32 KiB) */
    size_t max_headers;      /* field lines (100); also caps trailers */
    size_t max_target;       /* request-target bytes (8 KiB) */
    size_t max_chunk_ext;    /* chunk-extension bytes per chunk (256) */
    uint64_t max_body_bytes; /* 0 = unlimited: Content-Length or chunked total */
};
#define HTTP1_DEFAULT_MAX_HEADER_BYTES 32768
#define HTTP1_DEFAULT_MAX_HEADERS 100
#define HTTP1_DEFAULT_MAX_TARGET 8192
#define HTTP1_DEFAULT_MAX_CHUNK_EXT 256

enum http1_method {
    HTTP1_METHOD_OTHER = 0, /* a valid token Ferry does not know: see method view */
    HTTP1_METHOD_GET,
    HTTP1_METHOD_HEAD,
    HTTP1_METHOD_POST,
    HTTP1_METHOD_PUT,
    HTTP1_METHOD_DELETE,
    HTTP1_METHOD_PATCH,
    HTTP1_METHOD_OPTIONS,
    HTTP1_METHOD_TRACE,
    HTTP1_METHOD_CONNECT, /* never in an accepted request (HTTP1_E_CONNECT) */
};

enum http1_target_form {
    HTTP1_TARGET_ORIGIN,   /* /path?query */
    HTTP1_TARGET_ABSOLUTE, /* http://authority/path?query */
    HTTP1_TARGET_ASTERISK, /* * (OPTIONS only) */
};

/* How the body is delimited (RFC 9112 §6.3). */
enum http1_body {
    HTTP1_BODY_NONE,    /* no body */
    HTTP1_BODY_LENGTH,  /* content_length bytes (may be 0) */
    HTTP1_BODY_CHUNKED, /* chunked coding: http1_chunked_decode */
    HTTP1_BODY_CLOSE,   /* responses only: until the connection closes */
};

/* One field line; value without leading/trailing OWS. Views into the head. */
struct http1_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* Private to http1.c: where a restarted parse resumes. Offsets, not
 * pointers, since the caller's buffer may move between calls. */
struct http1_scan {
    size_t line;      /* start of the first line not yet complete */
    size_t scan;      /* bytes [line, scan) hold no LF */
    size_t tstart;    /* request line: offset of the target, 0 = not yet seen */
    size_t first_end; /* offset of the start line's CR once complete */
    int phase;        /* request line: 0 method, 1 target, 2 rest */
    bool first_done;  /* the start line is complete and valid */
};

struct http1_request {
    enum http1_method method;
    const char *method_str; /* the token as received (case-sensitive) */
    size_t method_len;
    enum http1_target_form form;
    const char *target; /* the whole request-target */
    size_t target_len;
    const char *path; /* "/..." (origin or absolute form; "/" if absolute had none), "*" */
    size_t path_len;
    const char *query; /* after '?', NULL when there is no '?' */
    size_t query_len;
    const char *scheme; /* absolute-form "http"/"https" as received, else NULL */
    size_t scheme_len;
    int version_minor; /* 0 or 1 (HTTP/1.2+ is treated as 1.1) */

    struct http1_header *headers; /* caller's array, see http1_request_init */
    size_t nheaders;
    size_t headers_cap;

    /* Effective host: the absolute-form authority, else the Host value,
     * raw (headers_host_normalise lowercases, strips port and dot).
     * NULL for an HTTP/1.0 request without Host; may be empty (Host:). */
    const char *host;
    size_t host_len;

    enum http1_body body;    /* NONE, LENGTH or CHUNKED */
    uint64_t content_length; /* for HTTP1_BODY_LENGTH */
    bool keep_alive;         /* version default, Connection: close/keep-alive */
    bool expect_continue;    /* Expect: 100-continue */
    bool upgrade;            /* Connection lists "upgrade" and Upgrade present */
    bool upgrade_websocket;  /* ... and Upgrade lists "websocket" */
    bool upgrade_h2c;        /* Upgrade lists "h2c" (headers.c drops it) */

    struct http1_scan scan_; /* private: resume state, see http1_request_init */
};

struct http1_response {
    int version_minor;
    int status; /* 100..599 */
    const char *reason;
    size_t reason_len;
    struct http1_header *headers;
    size_t nheaders;
    size_t headers_cap;
    enum http1_body body;    /* NONE, LENGTH, CHUNKED or CLOSE */
    uint64_t content_length; /* for LENGTH; also set (has_content_length) when
                              * a bodiless response (HEAD, 304) carries one */
    bool has_content_length;
    bool keep_alive;         /* false for CLOSE framing */
    bool upgrade;            /* 101 with Upgrade: the connection becomes a tunnel */
    struct http1_scan scan_; /* private */
};

/* Prepares `req` for a new head, with `cap` header slots owned by the
 * caller (the limit is min(cap, lim->max_headers)). Call once per request,
 * then http1_parse_request as bytes arrive, on the same struct. */
void http1_request_init(struct http1_request *req, struct http1_header *headers, size_t cap);
void http1_response_init(struct http1_response *resp, struct http1_header *headers, size_t cap);

/* Parses a request head from buf[0..len). Returns the head's length in
 * bytes (through the empty line's CRLF; the body or the next request
 * follows), HTTP1_INCOMPLETE, or an enum http1_error. `lim` may be NULL
 * (defaults). On success every field of `req` is set; on error or
 * INCOMPLETE its public fields are unspecified. */
ssize_t http1_parse_request(const char *buf, size_t len, const struct http1_limits *lim,
                            struct http1_request *req);

/* After the bytes of a parsed head were copied from `from` to `to` (the
 * same bytes, another place), points every view of req into the copy. */
void http1_request_rebase(struct http1_request *req, const char *from, const char *to);

/* Parses a response head; `request_method` is the method of the request it
 * answers (HEAD and CONNECT change the framing). Same returns as above;
 * every error is a 502 for the proxy. 1xx heads are returned like others
 * (body NONE): the caller reads the next head after a 100. */
ssize_t http1_parse_response(const char *buf, size_t len, const struct http1_limits *lim,
                             enum http1_method request_method, struct http1_response *resp);

/* Case-insensitive token comparison helper (ASCII). */
bool http1_token_eq(const char *a, size_t alen, const char *b);

/* Is s[0..n) a token (RFC 9110 §5.6.2: a field name, a method)? Not empty. */
bool http1_token_ok(const char *s, size_t n);
/* May s[0..n) stand in a field value: no CTL but HTAB, no DEL (obs-text
 * is allowed)? */
bool http1_field_text_ok(const char *s, size_t n);

/* Finds the first header named `name` (case-insensitive); NULL if none. */
const struct http1_header *http1_header_find(const struct http1_header *h, size_t n,
                                             const char *name);

/* Does a comma-separated field value list the token `tok` (case-insensitive,
 * OWS around elements)? Used for Connection, Upgrade, TE. */
bool http1_list_has(const char *value, size_t len, const char *tok);

/* Is this a valid Host value / authority: reg-name, IPv4 or [IPv6], with an
 * optional :port of 1..5 digits (<= 65535)? The empty string is valid. */
bool http1_host_valid(const char *host, size_t len);

/*
 * Streaming chunked decoder. The caller feeds contiguous pieces of the body
 * (e.g. each iovec of evbuffer_peek) in order; each call consumes bytes and
 * reports at most one payload range inside them, never copying:
 *
 *   ssize_t n = http1_chunked_decode(&dec, p, len, &off, &dlen);
 *   n < 0: error (enum http1_error); else payload is p[off .. off+dlen),
 *   the caller drains n bytes and calls again with the rest (n may be < len
 *   when a payload range ended or the body ended).
 *
 * The state across calls is a few integers (size digits, extension length,
 * CRLF position, trailer line state). When the last-chunk and the trailer
 * section's empty line are consumed, http1_chunked_done() is true and no
 * further byte is consumed (what follows is the next message).
 * Trailers are parsed with the field-line rules of heads (bare LF, bare CR,
 * obs-fold, whitespace before ':', CTL) and DROPPED: never merged into the
 * headers, never forwarded. Chunk extensions are checked for CTLs and
 * length and dropped (the proxy re-encodes with http1_chunk_header). Bare LF
 * is never accepted anywhere in the framing. An error is final: every
 * later call returns it again (the bytes the failing call looked at are
 * not drained, and reading them from another state could end the body
 * somewhere else).
 */
struct http1_chunked {
    uint8_t state;
    uint8_t digits;   /* size digits seen on this line */
    uint16_t ext_len; /* extension bytes on this line */
    int16_t error;    /* the error returned, once one was (0: none) */
    uint32_t trailer_lines;
    uint64_t remaining; /* payload bytes left in the current chunk, or the size being read */
    uint64_t total;     /* payload bytes so far */
    uint64_t trailer_bytes;
    size_t max_chunk_ext;
    size_t max_trailer_bytes;
    size_t max_trailers;
    uint64_t max_body; /* 0 = unlimited */
};

void http1_chunked_init(struct http1_chunked *dec, const struct http1_limits *lim);
ssize_t http1_chunked_decode(struct http1_chunked *dec, const char *buf, size_t len,
                             size_t *data_off, size_t *data_len);
bool http1_chunked_done(const struct http1_chunked *dec);

/* Chunked encoder: "HEX\r\n" for a chunk of n > 0 bytes, into buf (at least
 * HTTP1_CHUNK_HEADER_MAX bytes); returns its length. After the n payload
 * bytes the caller writes HTTP1_CHUNK_END; the body ends with
 * HTTP1_LAST_CHUNK (no trailers are ever sent). */
#define HTTP1_CHUNK_HEADER_MAX 19 /* 16 hex digits + CRLF + NUL */
#define HTTP1_CHUNK_END "\r\n"
#define HTTP1_LAST_CHUNK "0\r\n\r\n"
size_t http1_chunk_header(char *buf, uint64_t n);

/*
 * Serializers: write a canonical head into buf[0..cap) snprintf-style and
 * return the length it needs (excluding the NUL written when it fits); if
 * the result is >= cap the output is truncated, call again with more room.
 * Returns HTTP1_E_SERIALIZE if a method, target, name, value or reason
 * holds CR, LF or NUL, or a name is empty.
 *
 * The head is built only from the given fields, never from client bytes:
 *   METHOD SP path[?query] SP HTTP/1.1 CRLF   (request)
 *   HTTP/1.1 SP status SP reason CRLF         (response)
 *   Name: value CRLF                           for each header, in order,
 *                                              skipping any Content-Length
 *                                              and Transfer-Encoding
 *   exactly one framing header from `body`:   LENGTH -> Content-Length: N,
 *                                              CHUNKED -> Transfer-Encoding: chunked,
 *                                              NONE/CLOSE -> none
 *   Connection: close CRLF                    when connection_close
 *   Connection: keep-alive CRLF               else when connection_keep_alive
 *                                              (an HTTP/1.0 client's keep-alive
 *                                              must be confirmed)
 *   CRLF
 * For a HEAD or 304 response whose upstream sent Content-Length, pass
 * HTTP1_BODY_LENGTH and that length: it is advertised, no body follows.
 */
struct http1_head_out {
    const char *method; /* request */
    size_t method_len;
    const char *path; /* request: "/...", or "*" */
    size_t path_len;
    const char *query; /* request: NULL = no '?' */
    size_t query_len;
    int status; /* response */
    const char *reason;
    size_t reason_len;
    const struct http1_header *headers;
    size_t nheaders;
    enum http1_body body;
    uint64_t content_length;
    bool connection_close;
    bool connection_keep_alive;
    /* Every name and value came from http1_parse_* or headers_forward_*,
     * which validated them: skip the per-byte checks (CR, LF, NUL are
     * still impossible by construction). */
    bool fields_checked;
};
ssize_t http1_write_request_head(char *buf, size_t cap, const struct http1_head_out *h);
ssize_t http1_write_response_head(char *buf, size_t cap, const struct http1_head_out *h);

/* The standard reason phrase of a status ("Not Found"), "" if unknown. */
const char *http1_reason(int status);

#endif
