/* mem.c -- allocation helpers that abort on OOM. */
#include "mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t n)
{
    fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"out of memory\",\"bytes\":%zu}\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *xcalloc(size_t count, size_t n)
{
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (p == NULL)
        oom(count * n);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n);
    return q;
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

void mem__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr,
            "{\"level\":\"fatal\",\"msg\":\"assertion failed\",\"expr\":\"%s\","
            "\"file\":\"%s\",\"line\":%d}\n",
            expr, file, line);
    abort();
}

void *mem_lua_realloc(size_t *used, void *ptr, size_t osize, size_t nsize)
{
    if (ptr == NULL)
        osize = 0;
    if (nsize == 0) {
        free(ptr);
        *used -= osize;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p != NULL)
        *used = *used - osize + nsize;
    return p;
}
