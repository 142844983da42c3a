/* luacap.c -- a Lua VM with a memory cap and an instruction budget (luacap.h). */
#include "luacap.h"

#include "mem.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <luajit.h>

#define LUACAP_STEP 100 /* instructions between two looks at the budget */

static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct luacap *c = ud;
    size_t held = ptr ? osize : 0;
    if (nsize > held && c->mem - held + nsize > c->cap) {
        c->refused = 1;
        return NULL;
    }
    return mem_lua_realloc(&c->mem, ptr, osize, nsize);
}

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    (void) ar;
    void *ud;
    lua_getallocf(L, &ud);
    struct luacap *c = ud;
    c->steps += LUACAP_STEP;
    if (c->steps > c->budget) {
        lua_pushfstring(L, "instruction budget exceeded (%d): %s", (int) c->budget, c->what);
        lua_error(L);
    }
}

lua_State *luacap_open(struct luacap *c, size_t cap, long budget, const char *what)
{
    *c = (struct luacap){.cap = cap, .budget = budget, .what = what};
    lua_State *L = lua_newstate(capped_alloc, c);
    if (L == NULL)
        return NULL;
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, LUACAP_STEP);
    return L;
}

char *luacap_read_file(const char *path, size_t max, size_t *len, char *err, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, cap, "%s: cannot read: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = xmalloc(max + 1);
    size_t n = fread(buf, 1, max + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > max) {
        if (bad)
            snprintf(err, cap, "%s: cannot read", path);
        else
            snprintf(err, cap, "%s: larger than %zu KiB", path, max >> 10);
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}
