/* check.h -- `mmo check`: what a designer runs before a reload.
 *
 * Every .lua file under the scripts path is compiled, the route table and its handlers are
 * loaded as a node would load them, the module-state lint (core/lint.lua, built into the
 * binary) reads every script but those of mods/, and luacheck runs when it is on PATH. */
#ifndef CORE_CHECK_H
#define CORE_CHECK_H

struct lb_ctx;

struct check_result {
    int errors;   /* files that do not compile, a route table that does not load, luacheck's */
    int warnings; /* the lint's findings, luacheck's warnings */
};

/* Check the scripts of ctx->conf->scripts_path (ctx is borrowed). config_path is the
 * configuration file in use, or NULL: the .luacheckrc beside it is the project's (else luacheck
 * looks from the current directory up). Prints each problem as "file:line[:col]: ..." and then
 * "N errors, M warnings" to fd. */
struct check_result check_scripts(const struct lb_ctx *ctx, const char *config_path, int fd);

#endif
