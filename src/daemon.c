/* daemon: see daemon.h. */
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
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

void daemon_tune_malloc(void)
{
    if (getenv("GLIBC_TUNABLES"))
        return;
    if (!getenv("MALLOC_TRIM_THRESHOLD_"))
        mallopt(M_TRIM_THRESHOLD, 4 << 20);
    if (!getenv("MALLOC_MMAP_THRESHOLD_"))
        mallopt(M_MMAP_THRESHOLD, 1 << 20);
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

void daemon_stopping(void)
{
    sd_notify(0, "STOPPING=1\nSTATUS=draining");
}
