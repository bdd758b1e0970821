/* reply: see reply.h. */
#include "reply.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "config.h"
#include "headers.h"
#include "http1.h"

/* Header slots on the stack for an answer; a respond route with more
 * rules than this takes them from the heap. */
#define REPLY_FIELDS_STACK 16

bool reply_keeps(bool keep_alive, bool must_close, bool body_unread)
{
    return keep_alive && !must_close && !body_unread;
}

/* Room a head needs, give or take: the writers are asked once in the
 * common case, twice only when the estimate was short. */
static size_t head_estimate(const struct http1_head_out *h)
{
    size_t n = 128 + h->path_len + h->query_len + h->reason_len + h->method_len;
    for (size_t i = 0; i < h->nheaders; i++)
        n += h->headers[i].name_len + h->headers[i].value_len + 4;
    return n;
}

/* Serialises h with `writer` straight into dst's free space. Returns 0,
 * HTTP1_E_SERIALIZE, or -ENOMEM. */
static int write_head(struct evbuffer *dst, const struct http1_head_out *h,
                      ssize_t (*writer)(char *buf, size_t cap, const struct http1_head_out *h))
{
    size_t cap = head_estimate(h);
    for (int pass = 0; pass < 2; pass++) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(dst, (ev_ssize_t)cap, &v, 1) < 1)
            return -ENOMEM;
        ssize_t need = writer(v.iov_base, v.iov_len, h);
        if (need < 0)
            return (int)need;
        if ((size_t)need < v.iov_len) {
            v.iov_len = (size_t)need;
            evbuffer_commit_space(dst, &v, 1);
            return 0;
        }
        cap = (size_t)need + 1;
    }
    return -ENOMEM;
}

int reply_head(struct evbuffer *dst, const struct http1_head_out *h)
{
    return write_head(dst, h, http1_write_response_head);
}

int reply_request_head(struct evbuffer *dst, const struct http1_head_out *h)
{
    return write_head(dst, h, http1_write_request_head);
}

void reply_continue(struct evbuffer *out)
{
    struct http1_head_out h = {.status = 100,
                               .reason = "Continue",
                               .reason_len = 8,
                               .body = HTTP1_BODY_NONE,
                               .fields_checked = true};
    reply_head(out, &h);
}

/* Does a rule set or remove the field `name`? */
static bool rule_names(const struct config_header_rules *rules, const char *name)
{
    size_t len = strlen(name);
    return rules && (headers_named_in(name, len, rules->set, rules->nset) ||
                     headers_named_in(name, len, rules->remove, rules->nremove));
}

/* Does a rule set, add or remove the field `name`? */
static bool rule_has(const struct config_header_rules *rules, const char *name, size_t len)
{
    return rules && (headers_named_in(name, len, rules->set, rules->nset) ||
                     headers_named_in(name, len, rules->add, rules->nadd) ||
                     headers_named_in(name, len, rules->remove, rules->nremove));
}

static void field(struct http1_header *f, const char *name, const char *value, size_t value_len)
{
    f->name = name;
    f->name_len = strlen(name);
    f->value = value;
    f->value_len = value_len;
}

bool reply_write(struct evbuffer *out, const struct reply *rp)
{
    const struct config_header_rules *rules = rp->rules;
    size_t nrules = rules ? rules->nset + rules->nadd : 0;
    struct http1_header stack[REPLY_FIELDS_STACK];
    struct http1_header *f = stack;
    size_t cap = REPLY_FIELDS_STACK;
    if (nrules + 3 + rp->nextra > cap) {
        f = malloc((nrules + 3 + rp->nextra) * sizeof(*f));
        if (f) {
            cap = nrules + 3 + rp->nextra;
        } else {
            nrules = 0; /* the answer still goes out, without the route's fields */
            rules = NULL;
            f = stack;
        }
    }
    size_t n = 0;
    if (rp->content_type && !rule_names(rules, "Content-Type"))
        field(&f[n++], "Content-Type", rp->content_type, strlen(rp->content_type));
    if (rp->request_id_len && !rule_names(rules, "X-Request-Id"))
        field(&f[n++], "X-Request-Id", rp->request_id, rp->request_id_len);
    if (rp->retry_after)
        field(&f[n++], "Retry-After", "1", 1);
    for (size_t i = 0; i < nrules; i++)
        f[n++] = i < rules->nset ? rules->set[i] : rules->add[i - rules->nset];
    for (size_t i = 0; i < rp->nextra && n < cap; i++) {
        if (!rule_has(rules, rp->extra[i].name, rp->extra[i].name_len))
            f[n++] = rp->extra[i];
    }

    bool keep = reply_keeps(rp->keep_alive, rp->must_close, rp->body_unread);
    /* 1xx, 204 and 304 carry no body and no Content-Length (RFC 9110 §8.6). */
    bool bodiless = rp->status < 200 || rp->status == 204 || rp->status == 304;
    const char *reason = http1_reason(rp->status);
    struct http1_head_out h = {
        .status = rp->status,
        .reason = reason,
        .reason_len = strlen(reason),
        .headers = f,
        .nheaders = n,
        .body = bodiless ? HTTP1_BODY_NONE : HTTP1_BODY_LENGTH,
        .content_length = rp->body_len,
        .connection_close = !keep,
        .connection_keep_alive = keep && rp->http10,
    };
    int rc = reply_head(out, &h);
    if (f != stack)
        free(f);
    if (rc < 0)
        return false;
    if (!rp->head_only && !bodiless && rp->body_len)
        evbuffer_add(out, rp->body, rp->body_len);
    return keep;
}

size_t reply_error_json(char *buf, size_t cap, int status, const char *why, const char *id,
                        size_t id_len)
{
    int n = snprintf(buf, cap, "{\"error\":\"%s\",\"status\":%d,\"request_id\":\"%.*s\"}\n", why,
                     status, (int)id_len, id ? id : "");
    if (n < 0)
        return 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}
