/* mem.h -- allocation that aborts on out-of-memory.
 *
 * xmalloc/xcalloc/xrealloc/xstrdup never return NULL: on OOM they log and abort, so callers
 * never check their result (as zmalloc and h2o do). Free with free(). */
#ifndef CORE_MEM_H
#define CORE_MEM_H

#include <stddef.h>
#include <stdlib.h> /* free() */

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* The body of a lua_Alloc that counts the bytes it holds in *used: frees (nsize 0) or
 * reallocates; NULL when realloc fails. The caller decides first whether to refuse. */
void *mem_lua_realloc(size_t *used, void *ptr, size_t osize, size_t nsize);

/* Abort with file:line; only for invariants, never for client, network or database input. */
#define CORE_ASSERT(e) ((e) ? (void) 0 : mem__assert_fail(#e, __FILE__, __LINE__))
void mem__assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

#endif
