/* dtfault — a fault injector for the fault tests, loaded with LD_PRELOAD: writes to chosen files
 * fail with a chosen errno after a chosen number of bytes, in one chosen MPI rank or all, the way
 * a full disk, an exhausted quota or a failing device makes them fail. No privileges needed (a
 * small tmpfs makes a real full disk where the test may mount one; this makes the others).
 *
 *   DT_FAULT_PATH   substring of the paths whose writes fail (required; nothing happens without it)
 *   DT_FAULT_ERRNO  the errno: a number, or ENOSPC (default), EIO, EDQUOT, EROFS
 *   DT_FAULT_AFTER  bytes that still succeed (over all matching files of the process; default 0)
 *   DT_FAULT_RANK   only the process with this MPI rank (OMPI_COMM_WORLD_RANK / PMIX_RANK)
 *   DT_FAULT_STALL_S  instead of failing writes: reads of the files stall this many seconds each,
 *                     once DT_FAULT_AFTER bytes were read (a hung file system, a stalled rank)
 *
 * Intercepted: open/openat/creat (to learn which descriptors are targets), close, write, pwrite,
 * writev, pwritev, read, pread, and their 64-bit names. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FD 65536
static unsigned char targets[MAX_FD];
static int configured = -1; /* -1 unknown, 0 off, 1 on */
static const char* pattern;
static int fault_errno = ENOSPC;
static long long budget;
static int stall_s = 0;

static void configure(void) {
  if (configured >= 0) return;
  configured = 0;
  pattern = getenv("DT_FAULT_PATH");
  if (!pattern || !*pattern) return;
  const char* want_rank = getenv("DT_FAULT_RANK");
  if (want_rank && *want_rank) {
    const char* rank = getenv("OMPI_COMM_WORLD_RANK");
    if (!rank) rank = getenv("PMIX_RANK");
    if (!rank) rank = "0";
    if (strcmp(rank, want_rank) != 0) return;
  }
  const char* e = getenv("DT_FAULT_ERRNO");
  if (e && *e) {
    if (!strcmp(e, "ENOSPC"))
      fault_errno = ENOSPC;
    else if (!strcmp(e, "EIO"))
      fault_errno = EIO;
    else if (!strcmp(e, "EDQUOT"))
      fault_errno = EDQUOT;
    else if (!strcmp(e, "EROFS"))
      fault_errno = EROFS;
    else
      fault_errno = atoi(e);
  }
  const char* a = getenv("DT_FAULT_AFTER");
  budget = a && *a ? atoll(a) : 0;
  const char* st = getenv("DT_FAULT_STALL_S");
  stall_s = st && *st ? atoi(st) : 0;
  configured = 1;
}

static void track(int fd, const char* path) {
  configure();
  if (fd < 0 || fd >= MAX_FD) return;
  targets[fd] = configured == 1 && path && strstr(path, pattern) != NULL;
}

/* Reads in stall mode: free until the budget is spent, then each one sleeps first. */
static void maybe_stall(int fd, size_t n) {
  if (stall_s <= 0 || fd < 0 || fd >= MAX_FD || !targets[fd]) return;
  if (budget > 0) {
    budget -= (long long)n;
    return;
  }
  sleep((unsigned)stall_s);
}

/* How many of `n` bytes may be written to fd; -1 with errno set when none. */
static ssize_t allowed(int fd, size_t n) {
  if (stall_s > 0 || fd < 0 || fd >= MAX_FD || !targets[fd]) return (ssize_t)n;
  if (budget <= 0) {
    errno = fault_errno;
    return -1;
  }
  if ((long long)n > budget) n = (size_t)budget;
  budget -= (long long)n;
  return (ssize_t)n;
}

#define REAL(name, ret, ...)              \
  static ret (*real_##name)(__VA_ARGS__); \
  if (!real_##name) real_##name = (ret(*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name)

static mode_t mode_arg(int flags, va_list ap) { return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0; }

int open(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  REAL(open, int, const char*, int, ...);
  const int fd = real_open(path, flags, mode);
  track(fd, path);
  return fd;
}
int open64(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  REAL(open64, int, const char*, int, ...);
  const int fd = real_open64(path, flags, mode);
  track(fd, path);
  return fd;
}
int openat(int dir, const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  REAL(openat, int, int, const char*, int, ...);
  const int fd = real_openat(dir, path, flags, mode);
  track(fd, path);
  return fd;
}
int openat64(int dir, const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  REAL(openat64, int, int, const char*, int, ...);
  const int fd = real_openat64(dir, path, flags, mode);
  track(fd, path);
  return fd;
}
int creat(const char* path, mode_t mode) { return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode); }
int creat64(const char* path, mode_t mode) { return open64(path, O_CREAT | O_WRONLY | O_TRUNC, mode); }

int close(int fd) {
  REAL(close, int, int);
  if (fd >= 0 && fd < MAX_FD) targets[fd] = 0;
  return real_close(fd);
}

ssize_t write(int fd, const void* buf, size_t n) {
  REAL(write, ssize_t, int, const void*, size_t);
  const ssize_t ok = allowed(fd, n);
  return ok < 0 ? -1 : real_write(fd, buf, (size_t)ok);
}
ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) {
  REAL(pwrite, ssize_t, int, const void*, size_t, off_t);
  const ssize_t ok = allowed(fd, n);
  return ok < 0 ? -1 : real_pwrite(fd, buf, (size_t)ok, off);
}
ssize_t pwrite64(int fd, const void* buf, size_t n, off_t off) {
  REAL(pwrite64, ssize_t, int, const void*, size_t, off_t);
  const ssize_t ok = allowed(fd, n);
  return ok < 0 ? -1 : real_pwrite64(fd, buf, (size_t)ok, off);
}

static size_t total(const struct iovec* v, int n) {
  size_t t = 0;
  for (int i = 0; i < n; ++i) t += v[i].iov_len;
  return t;
}
/* Vectored writes are all-or-nothing here (a short vectored write is legal but rare to handle). */
ssize_t writev(int fd, const struct iovec* v, int n) {
  REAL(writev, ssize_t, int, const struct iovec*, int);
  const size_t t = total(v, n);
  if (allowed(fd, t) != (ssize_t)t) {
    errno = fault_errno;
    return -1;
  }
  return real_writev(fd, v, n);
}
ssize_t pwritev(int fd, const struct iovec* v, int n, off_t off) {
  REAL(pwritev, ssize_t, int, const struct iovec*, int, off_t);
  const size_t t = total(v, n);
  if (allowed(fd, t) != (ssize_t)t) {
    errno = fault_errno;
    return -1;
  }
  return real_pwritev(fd, v, n, off);
}
ssize_t pwritev64(int fd, const struct iovec* v, int n, off_t off) {
  REAL(pwritev64, ssize_t, int, const struct iovec*, int, off_t);
  const size_t t = total(v, n);
  if (allowed(fd, t) != (ssize_t)t) {
    errno = fault_errno;
    return -1;
  }
  return real_pwritev64(fd, v, n, off);
}

ssize_t read(int fd, void* buf, size_t n) {
  REAL(read, ssize_t, int, void*, size_t);
  maybe_stall(fd, n);
  return real_read(fd, buf, n);
}
ssize_t pread(int fd, void* buf, size_t n, off_t off) {
  REAL(pread, ssize_t, int, void*, size_t, off_t);
  maybe_stall(fd, n);
  return real_pread(fd, buf, n, off);
}
ssize_t pread64(int fd, void* buf, size_t n, off_t off) {
  REAL(pread64, ssize_t, int, void*, size_t, off_t);
  maybe_stall(fd, n);
  return real_pread64(fd, buf, n, off);
}
