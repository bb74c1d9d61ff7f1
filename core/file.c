/*
 * file.c: files that survive a crash (see pd.h): checked writes, fsync of
 * the file and of its directory, and a rename over the old file, so that a
 * checkpoint on disk is always a whole one.  The cost (two fsyncs) is paid
 * once per checkpoint, not per value.
 */
#define _GNU_SOURCE
#include "pd/pd.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Write all n bytes to fd, retrying short writes and EINTR.  0 or -errno. */
static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
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
  int rc = 0;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) rc = -errno;
  if (!rc && (step = "write", rc = write_all(fd, p, n)) == 0) {
    step = "fsync";
    if (fsync(fd)) rc = -errno;
  }
  if (fd >= 0 && close(fd) && !rc) {
    step = "close";
    rc = -errno;
  }
  if (!rc) {
    step = "rename";
    if (rename(tmp, path)) rc = -errno;
  }
  if (!rc) {
    step = "fsync the directory of";
    rc = sync_dir(path);
    if (rc) snprintf(err, errn, "cannot %s %s: %s", step, path, strerror(-rc));
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
  int rc = write_all(fd, p, n);
  const char *step = "write";
  if (!rc && fsync(fd)) {
    rc = -errno;
    step = "fsync";
  }
  if (close(fd) && !rc) {
    rc = -errno;
    step = "close";
  }
  if (rc) snprintf(err, errn, "cannot write %s (%s: %s)", path, step, strerror(-rc));
  return rc ? -1 : 0;
}
