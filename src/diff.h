/*
 * diff: `ferry diff -c FILE`, what a reload of FILE would change against
 * the running instance, and the normalized form of a config both sides
 * are compared in.
 *
 * The normalized form is text, one line per object: a kind, a name and
 * its settings as key=value (values %-escaped: no space, '=' or control
 * character in them), in the config's order:
 *   global workers=2 coroutine_stack=65536 ...
 *   listener 127.0.0.1:8080 backlog=4096 proxy_protocol=false ...
 *   timeouts - client_header=10s ...
 *   upstream api balance=round_robin keepalive=64 ...
 *   server api/127.0.0.1:9001 weight=1
 *   route api-v1 position=1 path_prefix=/v1/ upstream=api ...
 * Secrets never appear: header values a route sets or adds, and respond
 * bodies, are shown as a hash (a change is visible, the value is not).
 * The admin endpoint serves it as GET /config; the CLI renders the file's
 * and compares.
 *
 * Process layer, main thread or the CLI; nothing here yields. diff_run
 * blocks (a command-line tool, not the server).
 */
#ifndef FERRY_DIFF_H
#define FERRY_DIFF_H

#include <stdio.h>

struct config;

/* Writes cfg's normalized form to out. */
void diff_config_write(FILE *out, const struct config *cfg);

/*
 * `ferry diff -c path`: loads path (errors printed as by -t), reads the
 * running config's normalized form from the admin endpoint named by the
 * file's admin.listen, and prints every object added, removed or changed
 * (with the settings that changed) to out. Returns 0 when nothing
 * changes, 1 when something does, 2 on an error (printed to err).
 */
int diff_run(const char *path, FILE *out, FILE *err);

#endif
