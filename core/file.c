/*
 * file.c: files that survive a crash (see pd.h): checked writes, fsync of
 * the file and of its directory, and a rename over the old file, so that a
 * checkpoint on disk is always a whole one.  The cost (two fsyncs) is paid
 * once per checkpoint, not per value.
 */
#define _GNU_SOURCE
#include "pd/pd.h"
#include "pd/pdi.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int pdi_write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd q = {fd, POLLOUT, 0};
        poll(&q, 1, 1000);
        continue;
      }
      return -errno;
    }
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

int pdi_sync_close(int fd) {
  int rc = fsync(fd) ? -errno : 0;
  if (close(fd) && !rc) rc = -errno;
  return rc;
}

/* fsync the directory that holds path (so that a rename in it is durable). */
static int sync_dir(const char *path) {
  char *copy = strdup(path);
  if (!copy) return -ENOMEM;
  int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(copy);
  if (fd < 0) return -errno;
  int rc = fsync(fd) ? -errno : 0;
  close(fd);
  return rc == -EINVAL ? 0 : rc;          /* a file system that cannot: fine */
}

int pd_file_replace(const char *path, const void *p, size_t n, char *err, size_t errn) {
  size_t len = strlen(path);
  char *tmp = malloc(len + 5);
  if (!tmp) {
    snprintf(err, errn, "cannot write %s: out of memory", path);
    return -1;
  }
  memcpy(tmp, path, len);
  memcpy(tmp + len, ".tmp", 5);
  const char *step = "open";
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int rc = fd < 0 ? -errno : 0;
  if (!rc) {
    step = "write";
    rc = pdi_write_all(fd, p, n);
    int rs = pdi_sync_close(fd);                    /* closed either way */
    if (!rc && rs) {
      step = "fsync";
      rc = rs;
    }
  }
  if (!rc) {
    step = "rename";
    if (rename(tmp, path)) rc = -errno;
  }
  if (!rc) {
    rc = sync_dir(path);
    if (rc) snprintf(err, errn, "cannot fsync the directory of %s: %s", path, strerror(-rc));
    free(tmp);
    return rc ? -1 : 0;
  }
  snprintf(err, errn, "cannot write %s (%s %s: %s)", path, step, tmp, strerror(-rc));
  unlink(tmp);
  free(tmp);
  return -1;
}

int pd_file_append(const char *path, const void *p, size_t n, char *err, size_t errn) {
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    snprintf(err, errn, "cannot write %s: %s", path, strerror(errno));
    return -1;
  }
  const char *step = "write";
  int rc = pdi_write_all(fd, p, n);
  int rs = pdi_sync_close(fd);                      /* closed either way */
  if (!rc && rs) {
    step = "fsync";
    rc = rs;
  }
  if (rc) snprintf(err, errn, "cannot write %s (%s: %s)", path, step, strerror(-rc));
  return rc ? -1 : 0;
}
