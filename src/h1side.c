/* h1side: HTTP/1 response writers of the request side. See h1side.h. */
#include "h1side.h"

#include "http1.h"
#include "io.h"
#include "reply.h"
#include "request.h"
#include "tls.h"

static int h1_write_head(struct request *r, const struct side_head *sh)
{
    struct http1_head_out h = {
        .status = sh->status,
        .reason = sh->reason,
        .reason_len = sh->reason_len,
        .headers = sh->headers,
        .nheaders = sh->nheaders,
        .body = sh->body,
        .content_length = sh->content_length,
        .connection_close = !sh->keep_alive && !sh->tunnel,
        .connection_keep_alive = sh->keep_alive && r->req.version_minor == 0,
        .fields_checked = true,
    };
    return reply_head(io_output(r->side->s), &h);
}

static bool h1_answer(struct request *r, const struct reply *rp)
{
    return reply_write(io_output(r->side->s), rp);
}

static void h1_interim_continue(struct request *r)
{
    reply_continue(io_output(r->side->s));
}

static bool h1_client_cert(const struct request *r, const char **subject, const char **fingerprint)
{
    return tls_client_identity(r->side->s, subject, fingerprint);
}

static void h1_abort(struct request *r)
{
    io_reset_on_close(r->side->s);
}

const struct request_side_ops h1side_ops = {
    .write_head = h1_write_head,
    .answer = h1_answer,
    .interim_continue = h1_interim_continue,
    .client_cert = h1_client_cert,
    .abort = h1_abort,
};
