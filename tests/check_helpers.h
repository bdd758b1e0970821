/*
 * check_helpers: what every Check unit test of tests/ would otherwise
 * write again.
 *
 * - CHECK_NELEMS(a): the number of elements of an array (for
 *   tcase_add_loop_test over a table of cases).
 * - check_run(s): runs a suite (CK_NORMAL: failures printed, forking per
 *   test as Check does by default) and returns main's exit status.
 * - check_run_child(fn, arg, r): runs fn(arg) in a forked child with its
 *   stderr captured into r->err (cut at CHECK_CHILD_ERR - 1 bytes, the
 *   rest read and dropped so the child never blocks); the child exits 0
 *   when fn returns and is killed by SIGALRM after 20 s if it hangs.
 *   r->status is the waitpid status. For code that is expected to abort.
 * - check_assert_aborted_naming(r, name): the child died of SIGABRT and
 *   its stderr names `name`.
 *
 * Everything is static inline: a test includes what it uses and the
 * compiler warns about nothing it does not.
 */
#ifndef FERRY_CHECK_HELPERS_H
#define FERRY_CHECK_HELPERS_H

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK_NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static inline int check_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#define CHECK_CHILD_ERR 8192

/* Keep it off small stacks: `static struct check_child r;` in a test. */
struct check_child {
    int status;
    char err[CHECK_CHILD_ERR];
};

static inline void check_run_child(void (*fn)(void *arg), void *arg, struct check_child *r)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], STDERR_FILENO);
        close(p[1]);
        alarm(20);
        fn(arg);
        _exit(0);
    }
    close(p[1]);
    size_t len = 0;
    for (;;) {
        char scratch[512];
        char *dst = len < sizeof r->err - 1 ? r->err + len : scratch;
        size_t room = len < sizeof r->err - 1 ? sizeof r->err - 1 - len : sizeof scratch;
        ssize_t k = read(p[0], dst, room);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        if (dst != scratch)
            len += (size_t)k;
    }
    r->err[len] = '\0';
    close(p[0]);
    ck_assert_int_eq(waitpid(pid, &r->status, 0), pid);
}

static inline void check_assert_aborted_naming(const struct check_child *r, const char *name)
{
    ck_assert_msg(WIFSIGNALED(r->status) && WTERMSIG(r->status) == SIGABRT,
                  "child should die by SIGABRT; status %#x, stderr: %s", (unsigned)r->status,
                  r->err);
    ck_assert_msg(strstr(r->err, name) != NULL, "abort message should name %s; stderr: %s", name,
                  r->err);
}

#endif
