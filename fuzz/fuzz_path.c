/*
 * libFuzzer target for path normalisation (headers_path_normalise), the
 * step every route decision rests on. Asserts that the result is never
 * longer than the input, starts with '/' (or is "*"), holds no "." or
 * ".." segment, that normalising it again changes nothing (routing and
 * the upstream see the same path), and that the path-parameter check
 * reads it without fault.
 */
// sources: src/headers.c src/http1.c
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "headers.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Does p[0..n) hold a "." or ".." segment? */
static int has_dot_segment(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '/')
            continue;
        size_t j = i + 1;
        while (j < n && p[j] == '.')
            j++;
        size_t dots = j - i - 1;
        if ((dots == 1 || dots == 2) && (j == n || p[j] == '/'))
            return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *out = malloc(size + 1);
    char *again = malloc(size + 1);
    if (!out || !again)
        abort();
    ssize_t n = headers_path_normalise((const char *)data, size, out, size + 1);
    if (n >= 0) {
        CHECK((size_t)n <= size);
        CHECK((n == 1 && out[0] == '*') || (n >= 1 && out[0] == '/'));
        if (!(n == 1 && out[0] == '*'))
            CHECK(!has_dot_segment(out, (size_t)n));
        ssize_t m = headers_path_normalise(out, (size_t)n, again, size + 1);
        CHECK(m == n && memcmp(out, again, (size_t)n) == 0);
        (void)headers_path_has_params(out, (size_t)n);
    }
    free(out);
    free(again);
    return 0;
}
