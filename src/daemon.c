/* daemon: see daemon.h. */
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

long daemon_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (long)rl.rlim_cur;
}

void daemon_presize_fds(uint64_t want)
{
    if (want > DAEMON_FDS_PRESIZE_MAX)
        want = DAEMON_FDS_PRESIZE_MAX;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && want > rl.rlim_cur)
        want = rl.rlim_cur;
    if (want <= 64) /* the table every process starts with */
        return;
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    int high = fcntl(fd, F_DUPFD_CLOEXEC, (int)want - 1);
    if (high >= 0)
        close(high);
    close(fd);
}

void daemon_tune_malloc(void)
{
    if (getenv("GLIBC_TUNABLES"))
        return;
    if (!getenv("MALLOC_TRIM_THRESHOLD_"))
        mallopt(M_TRIM_THRESHOLD, 4 << 20);
    if (!getenv("MALLOC_MMAP_THRESHOLD_"))
        mallopt(M_MMAP_THRESHOLD, 1 << 20);
}

void daemon_reserve_heap(size_t bytes)
{
    enum { BLOCK = 512 << 10, MAX = 128 };
    void *held[MAX];
    size_t n = 0;
    while (n < MAX && n * BLOCK < bytes && (held[n] = malloc(BLOCK - 64)))
        n++;
    while (n)
        free(held[--n]); /* newest first: each one joins the top chunk */
}

int daemon_pidfile(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        fprintf(stderr, "ferry: pid_file %s: %s\n", path, strerror(err));
        return -err;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char other[32] = "";
        ssize_t n = pread(fd, other, sizeof(other) - 1, 0);
        if (n > 0)
            other[n] = '\0';
        other[strcspn(other, "\n")] = '\0';
        fprintf(stderr, "ferry: pid_file %s: locked by another ferry (pid %s)\n", path,
                other[0] ? other : "?");
        close(fd);
        return -(err == EWOULDBLOCK ? EEXIST : err);
    }
    char pid[32];
    int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        int err = errno;
        fprintf(stderr, "ferry: pid_file %s: %s\n", path, strerror(err));
        close(fd);
        return -err;
    }
    return fd;
}

void daemon_pidfile_remove(const char *path, int fd)
{
    if (fd < 0)
        return;
    unlink(path);
    close(fd);
}

void daemon_ready(const char *status)
{
    sd_notifyf(0, "READY=1\nSTATUS=%s\nMAINPID=%ld", status, (long)getpid());
}

int daemon_user_check(const char *user)
{
    errno = 0;
    struct passwd *pw = getpwnam(user);
    if (pw)
        return 0;
    fprintf(stderr, "ferry: user %s: %s\n", user, errno ? strerror(errno) : "no such user");
    return -1;
}

int daemon_drop_privileges(const char *user)
{
    if (geteuid() != 0) {
        fprintf(stderr, "ferry: user %s: ignored: ferry was not started as root\n", user);
        return 0;
    }
    struct passwd *pw = getpwnam(user);
    if (!pw) {
        fprintf(stderr, "ferry: user %s: no such user\n", user);
        return -1;
    }
    if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
        setuid(pw->pw_uid) != 0) {
        fprintf(stderr, "ferry: user %s: cannot switch to it: %s\n", user, strerror(errno));
        return -1;
    }
    if (pw->pw_uid != 0 && setuid(0) == 0) {
        fprintf(stderr, "ferry: user %s: root could be regained; refusing to run\n", user);
        return -1;
    }
    return 0;
}

void daemon_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long us =
        (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000;
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading", us);
}

void daemon_status(const char *status)
{
    sd_notifyf(0, "STATUS=%s", status);
}

uint64_t daemon_watchdog_usec(void)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0)
        return 0;
    return usec;
}

void daemon_watchdog(void)
{
    sd_notify(0, "WATCHDOG=1");
}

int daemon_listen_fds(void)
{
    int n = sd_listen_fds(1); /* unsets LISTEN_* so children do not inherit them */
    return n < 0 ? 0 : n;
}

bool daemon_fd_is_listener(int fd, const struct sockaddr *sa, socklen_t salen)
{
    int family = sa->sa_family;
    if (family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        return sd_is_socket_unix(fd, SOCK_STREAM, 1, un->sun_path, 0) > 0;
    }
    return sd_is_socket_sockaddr(fd, SOCK_STREAM, sa, salen, 1) > 0;
}

void daemon_stopping(void)
{
    sd_notify(0, "STOPPING=1\nSTATUS=draining");
}
