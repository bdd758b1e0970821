/*
 * config_tls: the listen[].tls and upstreams.NAME.tls mappings. Only their
 * shape is checked here (the config stays pure: no OpenSSL, no file is
 * opened); each file named keeps where it was named, so the tls module,
 * which reads the files after loading (tls_config_load), reports a missing
 * file or a key that does not match its certificate as FILE:LINE:COLUMN.
 */
#include "config.h"
#include "config_internal.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define AT(type, member) offsetof(type, member)

/* The path to a value, written out once for a file's later messages. */
static char *path_text(struct ctx *c, const struct cfg_path *p)
{
    char buf[PATHLEN];
    size_t o = 0;
    const struct cfg_path *chain[32];
    size_t n = 0;
    for (; p && n < 32; p = p->up)
        chain[n++] = p;
    buf[0] = '\0';
    while (n-- > 0 && o < sizeof(buf)) {
        int r = chain[n]->key
                    ? snprintf(buf + o, sizeof(buf) - o, "%s%s", o ? "." : "", chain[n]->key)
                    : snprintf(buf + o, sizeof(buf) - o, "[%zu]", chain[n]->index);
        o = r < 0 ? sizeof(buf) : o + (size_t)r;
    }
    return cfg_strdup(c->mem, buf);
}

/* A file path (a non-empty string) with where it is named. */
static bool load_file(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                      const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_file *file = (struct config_file *)((char *)target + f->offset);
    (void)k;
    if (!cfg_get_string(c, v, path, &file->path))
        return false;
    if (!file->path[0]) {
        cfg_err(c, v, path, "expected a file path, got an empty string");
        file->path = NULL;
        return false;
    }
    file->key = path_text(c, path);
    file->line = v->line;
    file->col = v->col;
    return true;
}

/* protocols: [TLSv1.2, TLSv1.3] */
static bool load_protocols(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                           const struct ynode *v, const struct cfg_path *path, void *target)
{
    unsigned *out = (unsigned *)((char *)target + f->offset);
    (void)k;
    if (!cfg_want_seq(c, v, path, "a list like [TLSv1.2, TLSv1.3]"))
        return false;
    unsigned set = 0;
    bool ok = true;
    for (size_t i = 0; i < cfg_seq_items(v); i++) {
        const struct ynode *item = v->v[i];
        const struct cfg_path *ipath = CFG_INDEX(path, i);
        char q[QLEN];
        if (!cfg_want_scalar(c, item, ipath, "a TLS version (TLSv1.2 or TLSv1.3)")) {
            ok = false;
        } else if (streq(item->str, "TLSv1.2")) {
            set |= CONFIG_TLS_V12;
        } else if (streq(item->str, "TLSv1.3")) {
            set |= CONFIG_TLS_V13;
        } else if (streq(item->str, "TLSv1") || streq(item->str, "TLSv1.1") ||
                   streq(item->str, "SSLv3")) {
            cfg_err(c, item, ipath, "%s is obsolete and refused (RFC 8996): use TLSv1.2, TLSv1.3",
                    item->str);
            ok = false;
        } else {
            cfg_err(c, item, ipath, "unknown TLS version %s (expected TLSv1.2 or TLSv1.3)",
                    cfg_quote(q, sizeof(q), item->str, item->len));
            ok = false;
        }
    }
    if (ok && !set) {
        cfg_err(c, v, path, "expected at least one TLS version (TLSv1.2, TLSv1.3)");
        return false;
    }
    if (ok)
        *out = set;
    return ok;
}

/* alpn: [http/1.1]; h2 waits for HTTP/2. */
static bool load_alpn(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                      const struct ynode *v, const struct cfg_path *path, void *target)
{
    (void)f, (void)k, (void)target;
    if (!cfg_want_seq(c, v, path, "a list like [http/1.1]"))
        return false;
    bool ok = true;
    for (size_t i = 0; i < cfg_seq_items(v); i++) {
        const struct ynode *item = v->v[i];
        const struct cfg_path *ipath = CFG_INDEX(path, i);
        char q[QLEN];
        if (!cfg_want_scalar(c, item, ipath, "a protocol name (http/1.1)")) {
            ok = false;
        } else if (streq(item->str, "h2")) {
            cfg_err(c, item, ipath, "h2 is not supported yet: Ferry speaks HTTP/1.1 only");
            ok = false;
        } else if (!streq(item->str, "http/1.1")) {
            cfg_err(c, item, ipath, "unknown protocol %s (expected http/1.1)",
                    cfg_quote(q, sizeof(q), item->str, item->len));
            ok = false;
        }
    }
    return ok;
}

static bool load_string(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                        const struct ynode *v, const struct cfg_path *path, void *target)
{
    char **out = (char **)((char *)target + f->offset);
    (void)k;
    if (!cfg_get_string(c, v, path, out))
        return false;
    if (!(*out)[0]) {
        cfg_err(c, v, path, "expected a non-empty string");
        return false;
    }
    return true;
}

static bool load_client_verify(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                               const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_tls *t = target;
    char q[QLEN];
    (void)f, (void)k;
    if (!cfg_want_scalar(c, v, path, "required or optional"))
        return false;
    if (streq(v->str, "required")) {
        t->client_verify = CONFIG_CLIENT_VERIFY_REQUIRED;
    } else if (streq(v->str, "optional")) {
        t->client_verify = CONFIG_CLIENT_VERIFY_OPTIONAL;
    } else {
        cfg_err(c, v, path, "expected required or optional, got %s",
                cfg_quote(q, sizeof(q), v->str, v->len));
        return false;
    }
    return true;
}

/* clang-format off */
#define FILEKEY(type, k, d) {#k, CFG_CUSTOM, AT(type, k), .load = load_file, .doc = d}
/* clang-format on */

static const struct cfg_field cert_fields[] = {
    {"cert", CFG_CUSTOM, AT(struct config_tls_cert, cert), .load = load_file,
     .required = "required: the certificate file (PEM; its chain may follow it)",
     .doc = "a PEM certificate, its chain after it"},
    {"key", CFG_CUSTOM, AT(struct config_tls_cert, key), .load = load_file,
     .required = "required: the private key file (PEM, not encrypted)",
     .doc = "its PEM private key (not encrypted)"},
    FILEKEY(struct config_tls_cert, ocsp_staple, "a DER OCSP response to staple (none)"),
    {.key = NULL}};
const struct cfg_schema cfg_tls_cert_schema = {
    "listen[].tls.certificates[]", "a certificate (a mapping with cert: and key:)", cert_fields};

static bool load_certificates(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                              const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_tls *t = target;
    (void)f, (void)k;
    if (!cfg_want_seq(c, v, path, "a list of certificates (- cert: FILE, key: FILE)"))
        return false;
    size_t n = cfg_seq_items(v);
    if (n == 0) {
        cfg_err(c, v, path, "expected at least one certificate");
        return false;
    }
    t->certs = cfg_alloc(c->mem, n * sizeof(*t->certs));
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        const struct cfg_path *ipath = CFG_INDEX(path, i);
        if (!cfg_want_map(c, v->v[i], ipath, cfg_tls_cert_schema.what) ||
            !cfg_walk(c, v->v[i], ipath, &cfg_tls_cert_schema, &t->certs[t->ncerts])) {
            ok = false;
            continue;
        }
        t->ncerts++;
    }
    return ok;
}

static const struct cfg_field listen_tls_fields[] = {
    {"certificates", CFG_CUSTOM, .load = load_certificates,
     .required = "required: at least one certificate (- cert: FILE, key: FILE)",
     .doc = "chosen by SNI from their names; the first is the default"},
    {"protocols", CFG_CUSTOM, AT(struct config_tls, protocols), .load = load_protocols,
     .doc = "TLS versions accepted ([TLSv1.2, TLSv1.3])"},
    {"ciphers", CFG_CUSTOM, AT(struct config_tls, ciphers), .load = load_string,
     .doc = "OpenSSL cipher list for TLS 1.2 (Mozilla intermediate)"},
    {"alpn", CFG_CUSTOM, .load = load_alpn, .doc = "protocols offered by ALPN ([http/1.1])"},
    FILEKEY(struct config_tls, client_ca, "CA certificates that client certificates must chain to"),
    {"client_verify", CFG_CUSTOM, .load = load_client_verify,
     .doc = "with client_ca: required or optional (required)"},
    {.key = NULL}};
const struct cfg_schema cfg_listen_tls_schema = {
    "listen[].tls", "a mapping (certificates, protocols, client_ca)", listen_tls_fields};

bool cfg_load_listen_tls(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                         const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_listener *l = target;
    (void)f;
    if (!cfg_want_map(c, v, path, cfg_listen_tls_schema.what))
        return false;
    struct config_tls *t = cfg_alloc(c->mem, sizeof(*t));
    t->protocols = CONFIG_TLS_V12 | CONFIG_TLS_V13;
    t->line = k->line;
    t->col = k->col;
    bool ok = cfg_walk(c, v, path, &cfg_listen_tls_schema, t);
    if (!t->client_ca.path && cfg_map_get(v, "client_verify")) {
        cfg_err(c, cfg_map_get(v, "client_verify"), CFG_KEY(path, "client_verify"),
                "client_verify needs client_ca (the CAs client certificates chain to)");
        ok = false;
    }
    if (!ok)
        return false;
    if (t->client_ca.path && t->client_verify == CONFIG_CLIENT_VERIFY_OFF)
        t->client_verify = CONFIG_CLIENT_VERIFY_REQUIRED;
    l->tls = t;
    return true;
}

static const struct cfg_field upstream_tls_fields[] = {
    {"verify", CFG_BOOL, AT(struct config_upstream_tls, verify), .def = true,
     .doc = "verify the server's certificate and name (true)"},
    FILEKEY(struct config_upstream_tls, ca, "CA certificates to verify with (the system's)"),
    {"sni", CFG_CUSTOM, AT(struct config_upstream_tls, sni), .load = load_string,
     .doc = "the name sent and verified (the Host sent when fixed, else the server's name)"},
    FILEKEY(struct config_upstream_tls, cert, "a client certificate to present (none)"),
    FILEKEY(struct config_upstream_tls, key, "the client certificate's key"),
    {"protocols", CFG_CUSTOM, AT(struct config_upstream_tls, protocols), .load = load_protocols,
     .doc = "TLS versions offered ([TLSv1.2, TLSv1.3])"},
    {.key = NULL}};
const struct cfg_schema cfg_upstream_tls_schema = {
    "upstreams.NAME.tls", "a mapping (verify, ca, sni, cert, key, protocols)", upstream_tls_fields};

bool cfg_load_upstream_tls(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                           const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_upstream *u = target;
    (void)f, (void)k;
    if (!cfg_want_map(c, v, path, cfg_upstream_tls_schema.what))
        return false;
    struct config_upstream_tls *t = cfg_alloc(c->mem, sizeof(*t));
    cfg_defaults(&cfg_upstream_tls_schema, t);
    t->protocols = CONFIG_TLS_V12 | CONFIG_TLS_V13;
    bool ok = cfg_walk(c, v, path, &cfg_upstream_tls_schema, t);
    if (!cfg_map_get(v, "cert") != !cfg_map_get(v, "key")) {
        cfg_err(c, v, path, "cert and key go together: a client certificate needs both");
        return false;
    }
    if (!ok)
        return false;
    u->tls = t;
    return true;
}

/* A header name: a token (what headers_rewrite may set). */
static bool load_header_name(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                             const struct ynode *v, const struct cfg_path *path, void *target)
{
    if (!load_string(c, f, k, v, path, target))
        return false;
    for (const char *p = v->str; *p; p++) {
        if (!strchr("!#$%&'*+-.^_`|~", *p) && !(*p >= '0' && *p <= '9') &&
            !((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z')) {
            cfg_err(c, v, path, "expected a header name (a token), got \"%s\"", v->str);
            return false;
        }
    }
    return true;
}

static const struct cfg_field client_cert_fields[] = {
    {"required", CFG_BOOL, AT(struct config_client_cert, required), .def = true,
     .doc = "answer 403 to a request without a verified certificate (true)"},
    {"subject_header", CFG_CUSTOM, AT(struct config_client_cert, subject_header),
     .load = load_header_name, .doc = "the field the verified subject goes upstream in"},
    {"fingerprint_header", CFG_CUSTOM, AT(struct config_client_cert, fingerprint_header),
     .load = load_header_name, .doc = "the field its SHA-256 fingerprint (hex) goes upstream in"},
    {.key = NULL}};
const struct cfg_schema cfg_client_cert_schema = {
    "routes[].client_cert", "a mapping (required, subject_header, fingerprint_header)",
    client_cert_fields};

bool cfg_load_client_cert(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                          const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_route *r = target;
    (void)f, (void)k;
    struct config_client_cert *cc = cfg_alloc(c->mem, sizeof(*cc));
    cfg_defaults(&cfg_client_cert_schema, cc);
    if (!cfg_walk(c, v, path, &cfg_client_cert_schema, cc))
        return false;
    r->client_cert = cc;
    return true;
}
