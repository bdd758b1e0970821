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

/*
 * A socket read or write of one buffer is recvfrom or sendto, not readv or
 * writev: those go through the VFS (the iovec import, the position lock's
 * fdget_pos, rw_verify_area, fsnotify) before reaching the socket, which
 * recvfrom and sendto call directly. Several buffers need the iovec, and
 * take readv and writev. The descriptor must be a socket.
 */
static inline ssize_t sys_recv(int fd, void *buf, size_t len)
{
    return syscall(SYS_recvfrom, fd, buf, len, 0, NULL, NULL);
}

static inline ssize_t sys_send(int fd, const void *buf, size_t len)
{
    return syscall(SYS_sendto, fd, buf, len, MSG_NOSIGNAL, NULL, 0);
}

static inline ssize_t sys_readv(int fd, const struct iovec *iov, int n)
{
    return n == 1 ? sys_recv(fd, iov->iov_base, iov->iov_len) : syscall(SYS_readv, fd, iov, n);
}

static inline ssize_t sys_writev(int fd, const struct iovec *iov, int n)
{
    return n == 1 ? sys_send(fd, iov->iov_base, iov->iov_len) : syscall(SYS_writev, fd, iov, n);
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
