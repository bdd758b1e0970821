/*
 * libFuzzer target for the config loader: any bytes must load or be
 * rejected, never crash, hang or leak, and every rejection must carry a
 * position (FILE:LINE:COLUMN: first). Also linked with fuzz/replay.c so
 * `make check` replays fuzz/corpus/config.
 */
// clang-format off
// sources: src/config.c src/config_balance.c src/config_yaml.c src/config_value.c src/config_check.c src/config_schema.c src/config_trusted.c src/config_route.c src/regex.c src/http1.c src/config_auth.c src/config_policy.c src/config_tls.c src/auth.c src/auth_pool.c src/jwt.c src/ratelimit.c src/cors.c src/io.c src/io_idle.c src/io_splice.c src/log.c src/loop.c src/coro.c src/evmem.c
// libs: -lyaml -lpcre2-8 -lcrypto -ljansson -lcrypt -lpthread -levent -levent_pthreads
// clang-format on
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "../src/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = NULL;
    size_t len = 0;
    FILE *diag = open_memstream(&text, &len);
    if (!diag)
        return 0;
    struct config *cfg = NULL;
    int rc = config_load_string("fuzz.yaml", (const char *)data, size, &cfg, diag);
    fclose(diag);
    if (rc != 0) {
        unsigned line = 0, col = 0;
        if (cfg || sscanf(text, "fuzz.yaml:%u:%u: ", &line, &col) != 2 || line == 0 || col == 0) {
            fprintf(stderr, "rejection without a position:\n%s", text);
            abort();
        }
    } else {
        /* walk what the proxy would read */
        if (!cfg || cfg->nlisteners == 0)
            abort();
        for (size_t i = 0; i < cfg->nroutes; i++) {
            const struct config_route *r = &cfg->routes[i];
            if (!r->name || (!r->upstream == !r->respond))
                abort();
            if (r->upstream && config_upstream_find(cfg, r->upstream->name) != r->upstream)
                abort();
            config_route_allows_method(r, "GET", 3);
        }
        struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a000001)};
        config_trusted(cfg, (const struct sockaddr *)&in);
        config_unref(config_ref(cfg));
        config_unref(cfg);
    }
    free(text);
    return 0;
}
