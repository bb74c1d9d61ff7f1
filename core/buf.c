/* buf.c: the growable byte buffer of pd.h. */
#include "pd/pd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void pd_buf_init(pd_buf *b) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void pd_buf_free(pd_buf *b) {
  free(b->data);
  pd_buf_init(b);
}

int pd_buf_reserve(pd_buf *b, size_t extra) {
  if (extra <= b->cap - b->len) return 0;
  if (extra > SIZE_MAX / 2 - b->len) return -ENOMEM;
  size_t need = b->len + extra;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need) cap *= 2;           /* doubling: amortised O(1) append */
  char *p = realloc(b->data, cap);
  if (!p) return -ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int pd_buf_append(pd_buf *b, const void *p, size_t n) {
  int rc = pd_buf_reserve(b, n);
  if (rc) return rc;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

char *pd_buf_steal(pd_buf *b, size_t *len) {
  char *p = b->data;
  if (len) *len = b->len;
  pd_buf_init(b);
  return p;
}
