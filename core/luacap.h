/* luacap.h -- a throw-away Lua VM for a data file (config.lua, a mod's manifest).
 *
 * The file is Lua so it can compute values, but it is data: its VM gets no libraries, an
 * allocator with a cap on its bytes and a count hook with a budget of instructions, so a
 * `while true do end` or a string doubled forty times ends in an error, never a hang or an
 * exhausted machine. The caller owns the struct and closes the state with lua_close. */
#ifndef CORE_LUACAP_H
#define CORE_LUACAP_H

#include <stddef.h>

#include <lua.h>

struct luacap {
    size_t mem, cap;  /* bytes held by the VM, and the most it may hold */
    long steps;       /* instructions run so far (in steps of LUACAP_STEP) */
    long budget;      /* the most it may run */
    const char *what; /* ends the budget's error: "a manifest is data" */
    int refused;      /* an allocation was refused for the cap */
};

/* A new VM with c as its allocator's and hook's state, the JIT off (the hook sees every
 * instruction); NULL when the state cannot be made. c must outlive the state. */
lua_State *luacap_open(struct luacap *c, size_t cap, long budget, const char *what);

/* The whole file at path, at most max bytes, in a buffer the caller frees (not terminated);
 * NULL with "PATH: reason" in err when it cannot be read or is larger. */
char *luacap_read_file(const char *path, size_t max, size_t *len, char *err, size_t cap);

#endif
