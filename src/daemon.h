/*
 * daemon: what a well-behaved Unix service does around the proxy: the pid
 * file (locked, so a second instance on the same file fails at once),
 * RLIMIT_NOFILE raised soft to hard, and systemd notifications (READY=1,
 * STOPPING=1, STATUS= with READY). The only module that talks to libsystemd.
 */
#ifndef FERRY_DAEMON_H
#define FERRY_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* Raises the soft RLIMIT_NOFILE to the hard limit. Returns the new soft limit. */
long daemon_raise_nofile(void);

/*
 * Grows the process's descriptor table, once and before any other thread
 * exists, to hold want descriptors (at most DAEMON_FDS_PRESIZE_MAX, and
 * not past RLIMIT_NOFILE). The kernel grows the table by doubling when a
 * new descriptor's number passes its size, and in a process of more than
 * one thread every growth first waits for an RCU grace period
 * (expand_fdtable calls synchronize_rcu): 10 to 30 ms here in which the
 * worker that opened the socket sleeps. A burst of 5,000 clients took the
 * worker past 256, 512, ... 8,192 descriptors, six stalls of about 85 ms
 * in all, while its listen queue overflowed. Grown while one thread shares
 * the table, nothing waits; the cost is 8 bytes of kernel memory a slot
 * (512 KiB at the cap), never returned, as a busy process would keep it.
 */
#define DAEMON_FDS_PRESIZE_MAX 65536
void daemon_presize_fds(uint64_t want);

/* Fixes glibc malloc's trim and mmap thresholds (unless the environment
 * sets them). glibc's defaults are dynamic: until a large block is freed,
 * every free that leaves more than 128 KiB at the top of a worker's arena
 * hands it back with madvise, and the next requests fault the same pages
 * in again (about one page fault per keep-alive request, 5-10 % of its
 * CPU). A worker keeps up to 4 MiB of free heap instead; blocks of 1 MiB
 * and more are mapped on their own and returned at free. */
void daemon_tune_malloc(void);

/* Makes the calling thread's malloc arena writable up to `bytes` without
 * keeping them resident. glibc grows a thread's heap one mprotect per page
 * the first time it reaches the page (brk's top pad exists only for the
 * main arena), so a cold burst of requests paid about one mprotect each.
 * Takes and gives back blocks below the mmap threshold: the heap stays
 * writable that far, and the trim returns the pages to the kernel (a few
 * page-sized headers are touched once). Call once per worker thread, after
 * daemon_tune_malloc. */
void daemon_reserve_heap(size_t bytes);

/* Creates and locks the pid file, writing our pid. Returns an fd to keep
 * open, or -errno after printing why (another instance holds the lock). */
int daemon_pidfile(const char *path);
/* Removes the pid file at a clean exit. */
void daemon_pidfile_remove(const char *path, int fd);

/* `user:`: 0 when the user exists, else -1 after "ferry: user NAME: ..."
 * on stderr (checked before anything is bound). */
int daemon_user_check(const char *user);
/* Switches to user (its uid, primary and supplementary groups) when
 * running as root; outside root it says it is ignored and returns 0.
 * Returns -1 after printing why it failed. All threads switch (glibc). */
int daemon_drop_privileges(const char *user);

/* sd_notify wrappers; no-ops outside systemd. */
void daemon_ready(const char *status);
void daemon_stopping(void);
/* RELOADING=1 with MONOTONIC_USEC (systemd 253+; harmless before);
 * daemon_ready ends the reload. */
void daemon_reloading(void);
/* STATUS= alone. */
void daemon_status(const char *status);
/* WatchdogSec in microseconds when systemd expects WATCHDOG=1, else 0. */
uint64_t daemon_watchdog_usec(void);
void daemon_watchdog(void);
/* Socket activation: how many listening sockets were passed (fds 3..3+n),
 * 0 when none (or LISTEN_PID is not ours). Unsets LISTEN_*. */
int daemon_listen_fds(void);
#define DAEMON_LISTEN_FDS_START 3 /* SD_LISTEN_FDS_START */
/* True when fd is a listening stream socket bound to sa. */
bool daemon_fd_is_listener(int fd, const struct sockaddr *sa, socklen_t salen);

#endif
