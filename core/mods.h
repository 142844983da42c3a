/* mods.h -- mods: small Lua programs from scripts/mods/ that react to game events, each in a
 * sandbox of its own (docs/modding.md).
 *
 * Every mod gets a lua_State of its own: its allocator refuses past the mod's memory cap, the
 * JIT is off and a count hook enforces an instruction budget and a time budget. Inside, a mod
 * sees `events.on/emit`, `game.send/log/now/null` and safe parts of the base, string, table,
 * math and coroutine libraries; no io, os, debug, ffi, jit, package, require, load*, dofile,
 * string.dump, getfenv/setfenv, collectgarbage. Events cross from one VM to another as JSON
 * text (a copy), so nothing of one mod can reach another or the game's VM.
 *
 * A mod whose file does not load is "failed"; a handler that raises, or runs past the
 * instruction budget, the time budget or the memory cap, disables its mod at once
 * ("disabled": its VM is closed and its events skipped); the caller and the other mods go on.
 * Both are logged at error level with the reason and counted in metrics.
 *
 * Budgets: each handler the game's event reaches (mods_emit) starts a fresh budget for every
 * mod; what that call sets off in other mods through events.emit draws on those mods' budgets
 * for that same call, so one game-level handler call costs at most (number of mods) x budget.
 * A mod is never re-entered: an event emitted while one of its handlers runs does not reach
 * it. Emits nest at most MODS_MAX_DEPTH deep.
 *
 * Besides core/script*.c, core/conf.c and bindings/, the one file of core/ that includes lua.h
 * is mods.c: the sandbox is its whole business. Everything runs on the loop thread. */
#ifndef CORE_MODS_H
#define CORE_MODS_H

#include <stddef.h>
#include <stdint.h>

#define MODS_MAX_DEPTH 8 /* events.emit from inside a handler, nested */

struct mods;
struct metrics;

/* Per mod. memory_bytes: all the mod's Lua memory (its cap); instructions: VM instructions per
 * budget (see above; counted in steps of 100); time_ms: time running Lua per budget (stops a
 * loop of costly instructions, such as concatenating big strings, that the count alone lets
 * run long); 0 means none. */
struct mods_limits {
    size_t memory_bytes;
    long instructions;
    long time_ms;
};

/* What a mod may ask of the node. send: game.send(player_id, table) asks for the WebSocket
 * message json (len bytes, borrowed for the call) to go to that player if online:
 * {"t":"mod","mod":"<its name>","data":<the table>} (docs/protocol.md). May be NULL: game.send
 * then raises "unavailable". */
struct mods_host {
    void *ud;
    void (*send)(void *ud, int64_t player_id, const char *json, size_t len);
    /* A mod emitted event (payload json, borrowed for the call) after the other mods had it:
     * the game's own handlers (mmo.events.on) get it. May be NULL. */
    void (*emit)(void *ud, const char *mod, const char *event, const char *json, size_t len);
};

/* Load every mod of dir: dir/NAME.lua or dir/NAME/init.lua, NAME of letters, digits, '_' and
 * '-', in the order of their names. A missing dir is an empty set. A mod that does not load
 * stays in the set as "failed" with its error ("file:line: message"). Returns NULL with a
 * message in err only when dir exists but cannot be read. lim and host are copied; metrics is
 * borrowed and may be NULL (no metrics). */
struct mods *mods_load(const char *dir, const struct mods_limits *lim, const struct mods_host *host,
                       struct metrics *metrics, char *err, size_t cap);
/* Close every VM. Not from inside a handler or a host callback. */
void mods_free(struct mods *m);

/* Deliver event `event` with its payload (JSON text of len bytes, an object) to every running
 * mod that subscribed to it, in the set's order, synchronously. Returns the number of handlers
 * that ran to their end, or ERR_INVALID when the name is not an event name (1 to 64 of
 * letters, digits and "._:-") or the payload is not a JSON object; then no handler runs.
 * (ERR_BUSY if called from a host callback nested MODS_MAX_DEPTH deep.) */
int mods_emit(struct mods *m, const char *event, const char *json, size_t len);

/* 1 when name (len bytes) is an event name: 1 to 64 letters, digits and "._:-". */
int mods_event_name_ok(const char *name, size_t len);

/* Mods in the set, and the i-th one (0 <= i < count): its name, "running" | "failed" |
 * "disabled", and why (NULL while running). The strings belong to the set. */
int mods_count(const struct mods *m);
void mods_info(const struct mods *m, int i, const char **name, const char **state,
               const char **error);

#endif
