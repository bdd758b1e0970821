/*
 * sys: the per-request system calls, made without glibc's cancellation
 * wrapper.
 *
 * In a process with more than one thread, glibc brackets every
 * cancellation point (read, write, readv, writev, accept4, close) with
 * __pthread_enable_asynccancel and __pthread_disable_asynccancel, two
 * atomic read-modify-writes on the thread's cancel state. Ferry never
 * cancels a thread, so for the calls each request makes (a socket read and
 * write per side, an accept and a close per connection) that bracket is
 * pure cost: 1.3 % of a keep-alive request's CPU in perf here. syscall(2)
 * makes the same call without it; results and errno are unchanged.
 *
 * Calls: the kernel. Nothing here yields.
 */
#ifndef FERRY_SYS_H
#define FERRY_SYS_H

#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static inline ssize_t sys_readv(int fd, const struct iovec *iov, int n)
{
    return syscall(SYS_readv, fd, iov, n);
}

static inline ssize_t sys_writev(int fd, const struct iovec *iov, int n)
{
    return syscall(SYS_writev, fd, iov, n);
}

static inline int sys_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    return (int)syscall(SYS_accept4, fd, addr, len, flags);
}

static inline int sys_close(int fd)
{
    return (int)syscall(SYS_close, fd);
}

#endif
