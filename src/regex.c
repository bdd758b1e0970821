/* regex: see regex.h. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "regex.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct regex {
    pcre2_code *code;
    uint32_t captures;
    bool jit;
};

/* A thread's matching state: made on its first match, freed at its exit. */
struct regex_thread {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack; /* NULL when the library has no JIT */
};

static bool jit_wanted = true;

void regex_set_jit(bool on)
{
    __atomic_store_n(&jit_wanted, on, __ATOMIC_RELAXED);
}

static pthread_key_t thread_key;
static pthread_once_t thread_key_once = PTHREAD_ONCE_INIT;
static __thread struct regex_thread *thread_state;

static void thread_state_free(void *arg)
{
    struct regex_thread *t = arg;
    if (!t)
        return;
    pcre2_match_data_free(t->md);
    pcre2_match_context_free(t->mctx);
    pcre2_jit_stack_free(t->jit_stack);
    free(t);
}

static void thread_key_make(void)
{
    (void)pthread_key_create(&thread_key, thread_state_free);
}

static struct regex_thread *thread_get(void)
{
    if (thread_state)
        return thread_state;
    pthread_once(&thread_key_once, thread_key_make);
    struct regex_thread *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->md = pcre2_match_data_create(REGEX_MAX_CAPTURES + 1, NULL);
    t->mctx = pcre2_match_context_create(NULL);
    if (!t->md || !t->mctx) {
        thread_state_free(t);
        return NULL;
    }
    pcre2_set_match_limit(t->mctx, REGEX_MATCH_LIMIT);
    pcre2_set_depth_limit(t->mctx, REGEX_DEPTH_LIMIT);
    pcre2_set_heap_limit(t->mctx, REGEX_HEAP_LIMIT_KIB);
    uint32_t jit = 0;
    if (pcre2_config(PCRE2_CONFIG_JIT, &jit) >= 0 && jit) {
        t->jit_stack = pcre2_jit_stack_create(32u << 10, REGEX_JIT_STACK_MAX, NULL);
        if (!t->jit_stack) {
            thread_state_free(t);
            return NULL;
        }
        pcre2_jit_stack_assign(t->mctx, NULL, t->jit_stack);
    }
    (void)pthread_setspecific(thread_key, t);
    thread_state = t;
    return t;
}

struct regex *regex_compile(const char *pattern, size_t len, char *err, size_t errsize,
                            size_t *offset)
{
    *offset = len;
    if (len > REGEX_MAX_PATTERN) {
        snprintf(err, errsize, "a pattern is at most %d bytes", REGEX_MAX_PATTERN);
        return NULL;
    }
    if (memchr(pattern, '\0', len)) {
        snprintf(err, errsize, "a pattern holds no NUL byte");
        return NULL;
    }
    int code = 0;
    PCRE2_SIZE off = 0;
    /* Paths and header values are bytes, not UTF-8: (*UTF) is refused so a
     * match never fails on an invalid sequence. */
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)pattern, len, PCRE2_NEVER_UTF, &code, &off, NULL);
    if (!c) {
        PCRE2_UCHAR8 msg[160];
        if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
            snprintf((char *)msg, sizeof(msg), "error %d", code);
        snprintf(err, errsize, "%s", (const char *)msg);
        *offset = off;
        return NULL;
    }
    uint32_t captures = 0;
    pcre2_pattern_info(c, PCRE2_INFO_CAPTURECOUNT, &captures);
    struct regex *re = calloc(1, sizeof(*re));
    if (!re) {
        pcre2_code_free(c);
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    re->code = c;
    re->captures = captures;
    /* Without JIT (a library built without it, or no executable memory)
     * the interpreter runs the pattern under the same limits. */
    re->jit = __atomic_load_n(&jit_wanted, __ATOMIC_RELAXED) &&
              pcre2_jit_compile(c, PCRE2_JIT_COMPLETE) == 0;
    return re;
}

void regex_free(struct regex *re)
{
    if (!re)
        return;
    pcre2_code_free(re->code);
    free(re);
}

uint32_t regex_captures(const struct regex *re)
{
    return re->captures;
}

bool regex_jit(const struct regex *re)
{
    return re->jit;
}

int regex_match(const struct regex *re, const char *s, size_t len, size_t *ovec, size_t npairs)
{
    struct regex_thread *t = thread_get();
    if (!t)
        return REGEX_ERROR;
    /* pcre2_jit_match skips pcre2_match's checks of arguments that are
     * ours (about a third of a short match's cost); same limits. */
    PCRE2_SPTR subject = (PCRE2_SPTR)(s ? s : "");
    int rc = re->jit ? pcre2_jit_match(re->code, subject, len, 0, 0, t->md, t->mctx)
                     : pcre2_match(re->code, subject, len, 0, 0, t->md, t->mctx);
    if (rc == PCRE2_ERROR_NOMATCH)
        return REGEX_NOMATCH;
    if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
        rc == PCRE2_ERROR_HEAPLIMIT || rc == PCRE2_ERROR_JIT_STACKLIMIT)
        return REGEX_LIMIT;
    if (rc < 0)
        return REGEX_ERROR;
    /* rc == 0: more groups than the match data holds; all it holds are set. */
    size_t got = rc == 0 ? REGEX_MAX_CAPTURES + 1 : (size_t)rc;
    if (got > npairs)
        got = npairs;
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
    for (size_t i = 0; i < got; i++) {
        ovec[2 * i] = ov[2 * i] == PCRE2_UNSET ? SIZE_MAX : ov[2 * i];
        ovec[2 * i + 1] = ov[2 * i + 1] == PCRE2_UNSET ? SIZE_MAX : ov[2 * i + 1];
    }
    return got ? (int)got : 1;
}
