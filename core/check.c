/* check.c -- `mmo check`: compile, load, lint and luacheck the scripts (check.h).
 *
 * Runs as a command, without a node or an event loop: reading files and waiting for luacheck
 * block, which is what a command does. The lint is core/lint.lua, compiled into the binary
 * by CMake (check__lint_lua, generated from the file at build time); it runs in a Lua state of
 * its own, apart from the scripts it reads. */
#include "check.h"
#include "log.h"
#include "lb.h"
#include "conf.h"
#include "mem.h"
#include "script.h"

#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <luajit.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* generated from core/lint.lua (CMakeLists.txt, tools/cmake/embed.cmake) */
extern const unsigned char check__lint_lua[];
extern const size_t check__lint_lua_len;

struct file {
    char *path;  /* as printed: the scripts directory, then the path below it */
    int in_mods; /* under <scripts dir>/mods/: a mod keeps its state in locals by design */
    int broken;  /* does not compile */
};

struct files {
    struct file *v;
    size_t n, cap;
};

static void files_add(struct files *fs, char *path, int in_mods)
{
    if (fs->n == fs->cap) {
        fs->cap = fs->cap ? fs->cap * 2 : 64;
        fs->v = xrealloc(fs->v, fs->cap * sizeof *fs->v);
    }
    fs->v[fs->n++] = (struct file){path, in_mods, 0};
}

static int lua_name(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && strcmp(name + n - 4, ".lua") == 0;
}

/* Every .lua file under dir, in name order. Returns the number of directories that cannot be
 * read (each one said on fd). */
static int collect(struct files *fs, const char *dir, int depth, int in_mods, int fd)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    if (n < 0) {
        dprintf(fd, "%s: cannot read the directory: %s\n", dir, strerror(errno));
        return 1;
    }
    int unreadable = 0;
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        if (name[0] != '.') {
            size_t len = strlen(dir) + strlen(name) + 2;
            char *path = xmalloc(len);
            snprintf(path, len, "%s/%s", dir, name);
            struct stat st;
            if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
                unreadable += collect(fs, path, depth + 1,
                                      in_mods || (depth == 0 && strcmp(name, "mods") == 0), fd);
                free(path);
            } else if (lua_name(name)) {
                files_add(fs, path, in_mods);
            } else {
                free(path);
            }
        }
        free(names[i]);
    }
    free(names);
    return unreadable;
}

/* The whole file; NULL (errno set) when it cannot be read. Free with free(). */
static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 8192, n = 0;
    char *buf = xmalloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    *len = n;
    return buf;
}

/* ---- the module-state lint --------------------------------------------------------------- */

/* Run core/lint.lua's check over every file that compiled (mods/ excepted). */
static void lint_files(const struct files *fs, int fd, struct check_result *r)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    /* The interpreter only: with the JIT on, libluajit2 2.1-20230119 (Debian 12) crashes (SIGSEGV
     * in a compiled trace) on most runs over the shipped scripts; -O1 or -O3 without loop, fwd,
     * cse or fold does not. Interpreted, the lint reads 5,000 lines in about 40 ms. */
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    int rc =
        luaL_loadbuffer(L, (const char *) check__lint_lua, check__lint_lua_len, "=core/lint.lua");
    if (rc == 0)
        rc = lua_pcall(L, 0, 1, 0);
    if (rc != 0) {
        /* built from a file the unit specs load: only a broken build gets here */
        dprintf(fd, "mmo: the built-in lint does not load: %s\n", lua_tostring(L, -1));
        r->errors++;
        lua_close(L);
        return;
    }
    int lint = lua_gettop(L);
    for (size_t i = 0; i < fs->n; i++) {
        const struct file *f = &fs->v[i];
        if (f->broken || f->in_mods)
            continue;
        size_t len;
        char *src = read_all(f->path, &len);
        if (src == NULL) {
            dprintf(fd, "%s: cannot read: %s\n", f->path, strerror(errno));
            r->errors++;
            continue;
        }
        lua_getfield(L, lint, "check");
        lua_pushlstring(L, src, len);
        free(src);
        lua_pushstring(L, f->path);
        if (lua_pcall(L, 2, 2, 0) != 0) {
            dprintf(fd, "%s: warning: the lint failed on this file: %s\n", f->path,
                    lua_tostring(L, -1));
            r->warnings++;
            lua_settop(L, lint);
            continue;
        }
        if (lua_isnil(L, -2)) {
            /* LuaJIT compiled it, the lint's reader did not: the lint's fault, not the file's */
            dprintf(fd, "%s: warning: the lint cannot read this file (%s)\n", f->path,
                    lua_tostring(L, -1));
            r->warnings++;
            lua_settop(L, lint);
            continue;
        }
        int list = lua_gettop(L) - 1;
        int n = (int) lua_objlen(L, list);
        for (int k = 1; k <= n; k++) {
            lua_rawgeti(L, list, k);
            lua_getfield(L, -1, "line");
            lua_getfield(L, -2, "col");
            lua_getfield(L, -3, "message");
            dprintf(fd, "%s:%d:%d: warning: %s\n", f->path, (int) lua_tointeger(L, -3),
                    (int) lua_tointeger(L, -2), lua_tostring(L, -1));
            lua_pop(L, 4);
            r->warnings++;
        }
        lua_settop(L, lint);
    }
    lua_close(L);
}

/* ---- luacheck ---------------------------------------------------------------------------- */

/* The luacheck executable on PATH, or NULL. Free with free(). */
static char *find_on_path(const char *prog)
{
    const char *p = getenv("PATH");
    if (p == NULL)
        return NULL;
    while (*p) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t) (end - p) : strlen(p);
        if (len > 0) {
            size_t cap = len + strlen(prog) + 2;
            char *path = xmalloc(cap);
            snprintf(path, cap, "%.*s/%s", (int) len, p, prog);
            struct stat st;
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0)
                return path;
            free(path);
        }
        p += len;
        if (*p == ':')
            p++;
    }
    return NULL;
}

/* Whether line is luacheck's syntax error (E011) about a file the compile step reported. */
static int already_reported(const struct files *fs, const char *line)
{
    if (strstr(line, ": (E011) ") == NULL)
        return 0;
    for (size_t i = 0; i < fs->n; i++) {
        size_t n = strlen(fs->v[i].path);
        if (fs->v[i].broken && strncmp(line, fs->v[i].path, n) == 0 && line[n] == ':')
            return 1;
    }
    return 0;
}

/* luacheck --formatter plain --codes [--config RC] DIR...: each line it prints is passed on
 * and counted (E: error, W: warning; anything else, such as an I/O error, is an error). */
static void run_luacheck(const char *exe, const char *rc, char **dirs, int ndirs,
                         const struct files *fs, int fd, struct check_result *r)
{
    const char *argv[8 + 64];
    int argc = 0;
    argv[argc++] = "luacheck";
    argv[argc++] = "--formatter";
    argv[argc++] = "plain";
    argv[argc++] = "--codes";
    if (rc != NULL) {
        argv[argc++] = "--config";
        argv[argc++] = rc;
    }
    for (int i = 0; i < ndirs && i < 64; i++)
        argv[argc++] = dirs[i];
    argv[argc] = NULL;

    int pfd[2];
    if (pipe(pfd) != 0) {
        dprintf(fd, "mmo: luacheck not run: pipe: %s\n", strerror(errno));
        r->errors++;
        return;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        dprintf(fd, "mmo: luacheck not run: fork: %s\n", strerror(errno));
        r->errors++;
        close(pfd[0]);
        close(pfd[1]);
        return;
    }
    if (pid == 0) {
        close(pfd[0]);
        if (dup2(pfd[1], STDOUT_FILENO) < 0)
            _exit(127);
        close(pfd[1]);
        execv(exe, (char *const *) argv);
        dprintf(STDOUT_FILENO, "luacheck: cannot run %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    FILE *in = fdopen(pfd[0], "r");
    if (in == NULL) {
        close(pfd[0]);
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while ((n = getline(&line, &cap, in)) > 0) {
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = '\0';
            if (n == 0 || already_reported(fs, line))
                continue;
            dprintf(fd, "%s\n", line);
            if (strstr(line, ": (W") != NULL)
                r->warnings++;
            else
                r->errors++;
        }
        free(line);
        fclose(in);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    /* 0: clean, 1: warnings, 2: errors (all printed); 3 and up: luacheck itself failed */
    if (!WIFEXITED(status) || WEXITSTATUS(status) > 2) {
        dprintf(fd, "mmo: luacheck failed (%s %d)\n", WIFEXITED(status) ? "exit status" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        r->errors++;
    }
}

/* The .luacheckrc beside the configuration file, if there is one. Free with free(). */
static char *project_luacheckrc(const char *config_path)
{
    if (config_path == NULL)
        return NULL;
    const char *slash = strrchr(config_path, '/');
    size_t dirlen = slash ? (size_t) (slash - config_path) : 0;
    size_t cap = dirlen + sizeof "/.luacheckrc";
    char *rc = xmalloc(cap);
    if (slash)
        snprintf(rc, cap, "%.*s/.luacheckrc", (int) dirlen, config_path);
    else
        snprintf(rc, cap, ".luacheckrc");
    if (access(rc, R_OK) != 0) {
        free(rc);
        return NULL;
    }
    return rc;
}

/* ---- the command ------------------------------------------------------------------------- */

struct check_result check_scripts(const struct lb_ctx *ctx, const char *config_path, int fd)
{
    struct check_result r = {0, 0};
    struct files fs = {0};
    char *dirs[64];
    int ndirs = 0;

    /* the directories of the scripts path */
    const char *p = ctx->conf->scripts_path;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t) (end - p) : strlen(p);
        if (len > 0 && ndirs < 64)
            dirs[ndirs++] = xstrndup(p, len);
        p += len;
        if (*p == ';')
            p++;
    }

    /* 1. every file compiles */
    for (int i = 0; i < ndirs; i++)
        r.errors += collect(&fs, dirs[i], 0, 0, fd);
    lua_State *L = luaL_newstate();
    for (size_t i = 0; i < fs.n; i++) {
        if (luaL_loadfile(L, fs.v[i].path) != 0) {
            char msg[2048];
            snprintf(msg, sizeof msg, "%s", lua_tostring(L, -1));
            script_untruncate(msg, sizeof msg, fs.v[i].path);
            dprintf(fd, "%s\n", msg);
            fs.v[i].broken = 1;
            r.errors++;
        }
        lua_pop(L, 1);
    }
    lua_close(L);

    /* 2. the route table and every handler load (after a compile error they cannot) */
    if (r.errors == 0) {
        char err[1024];
        struct lb_ctx copy = *ctx;
        int level = log__level; /* the load's own info line is not a finding */
        if (level < LOG_WARN)
            log_set_level(LOG_WARN);
        struct script *s = script_new(&copy, err, sizeof err);
        log_set_level(level);
        if (s == NULL) {
            dprintf(fd, "%s\n", err);
            r.errors++;
        } else {
            script_free(s);
        }
    }

    /* 3. the module-state lint */
    lint_files(&fs, fd, &r);

    /* 4. luacheck, when it is there */
    char *exe = find_on_path("luacheck");
    if (exe == NULL) {
        dprintf(fd, "luacheck not found on PATH: skipped (apt-get install lua-check)\n");
    } else if (ndirs > 0) {
        char *rc = project_luacheckrc(config_path);
        run_luacheck(exe, rc, dirs, ndirs, &fs, fd, &r);
        free(rc);
    }
    free(exe);

    dprintf(fd, "%d error%s, %d warning%s\n", r.errors, r.errors == 1 ? "" : "s", r.warnings,
            r.warnings == 1 ? "" : "s");
    for (size_t i = 0; i < fs.n; i++)
        free(fs.v[i].path);
    free(fs.v);
    for (int i = 0; i < ndirs; i++)
        free(dirs[i]);
    return r;
}
