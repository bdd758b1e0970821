/*
 * regex: the one user of PCRE2 (routes' match.path_regex and the regex
 * form of match.headers).
 *
 * Pure module: compiles a pattern when a config is loaded (main thread)
 * and matches bytes on a worker. Nothing here yields or touches I/O; only
 * this file includes <pcre2.h>.
 *
 * Bounds (a pattern written for paths must never stall a worker):
 * - every match runs under REGEX_MATCH_LIMIT (backtracking steps) and
 *   REGEX_DEPTH_LIMIT (nested backtracking, which bounds the interpreter's
 *   heap too); a pattern that would backtrack without bound, such as
 *   ^(a+)+$ against "aaaa...b", stops at the limit and the match returns
 *   REGEX_LIMIT instead of running for minutes. What a hit means is the
 *   caller's decision (routing answers 500, see route.h).
 * - patterns are JIT-compiled where the library supports it (x86_64,
 *   aarch64); without JIT (or when JIT compilation fails) the interpreter
 *   runs the same pattern under the same limits. regex_jit() says which.
 * - the JIT's stack is a per-thread heap block (REGEX_JIT_STACK_MAX), never
 *   PCRE2's default 32 KiB on the machine stack: matching runs on small
 *   coroutine stacks.
 * - match data is per thread, created on the thread's first match and kept
 *   (freed at thread exit): matching allocates nothing per request.
 * - a pattern is limited to REGEX_MAX_CAPTURES groups that can be used
 *   ($1..$9) and to REGEX_MAX_PATTERN bytes.
 */
#ifndef FERRY_REGEX_H
#define FERRY_REGEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REGEX_MATCH_LIMIT 100000u        /* steps of one match */
#define REGEX_DEPTH_LIMIT 5000u          /* backtracking depth of one match */
#define REGEX_HEAP_LIMIT_KIB 1024u       /* interpreter's backtracking memory */
#define REGEX_JIT_STACK_MAX (512u << 10) /* per thread */
#define REGEX_MAX_CAPTURES 9             /* $1..$9 ($0 is the whole match) */
#define REGEX_MAX_PATTERN 4096

enum {
    REGEX_NOMATCH = 0,
    REGEX_LIMIT = -1, /* a match or depth limit was hit: treat as an error */
    REGEX_ERROR = -2, /* out of memory for the thread's match data, or another error */
};

struct regex;

/*
 * Compiles pattern (len bytes, may not hold NUL). Returns the compiled
 * regex, or NULL with a message in err (errsize bytes) and, for a syntax
 * error, the byte offset in the pattern where it was found in *offset
 * (else *offset is len).
 */
struct regex *regex_compile(const char *pattern, size_t len, char *err, size_t errsize,
                            size_t *offset);
/* NULL does nothing. */
void regex_free(struct regex *re);

/* Whether later regex_compile calls may JIT-compile (default true; tests
 * turn it off to run the interpreter, the fallback where there is no JIT). */
void regex_set_jit(bool on);

/* Capture groups in the pattern (not counting $0). */
uint32_t regex_captures(const struct regex *re);
/* True when matches run JIT-compiled code. */
bool regex_jit(const struct regex *re);

/*
 * Matches re against s (len bytes, not NUL-terminated). On a match
 * returns the number of pairs stored in ovec (>= 1; at most npairs, which
 * may be 0): ovec[2i], ovec[2i+1] are the start and end of group i, both
 * SIZE_MAX for a group that did not take part. Else REGEX_NOMATCH,
 * REGEX_LIMIT or REGEX_ERROR. Runs on any thread; allocates only on a
 * thread's first call.
 */
int regex_match(const struct regex *re, const char *s, size_t len, size_t *ovec, size_t npairs);

#endif
