/* mods.h -- mods: small Lua programs from scripts/mods/ that react to game events, each in a
 * sandbox of its own (docs/modding.md).
 *
 * A mod is a directory, NAME/, with manifest.lua (data: name, version, api, the events it
 * handles and emits, the mods it depends on, its load order) and init.lua (its code). The
 * manifest is evaluated in an empty environment of a small VM of its own (text only, a small
 * instruction budget and memory cap) and checked field by field; mods load dependencies first,
 * then by manifest order, then by name, and a mod whose manifest is bad, or that depends on a
 * mod that is missing, failed or in a cycle, is "failed".
 *
 * Every mod gets a lua_State of its own: its allocator refuses past the mod's memory cap, the
 * JIT is off and a count hook enforces an instruction budget and a time budget. Inside, a mod
 * sees `events.on/emit`, `game.send/log/now/null` and safe parts of the base, string, table,
 * math and coroutine libraries; no io, os, debug, ffi, jit, package, require, load*, dofile,
 * string.dump, getfenv/setfenv, collectgarbage. events.on takes only the events of the
 * manifest's handles, events.emit only those of its emits. Events cross from one VM to another
 * as JSON text (a copy), so nothing of one mod can reach another or the game's VM.
 *
 * A handler that raises, or runs past the instruction budget, the time budget or the memory
 * cap, is a strike against its mod (logged at warn, counted in metrics); the mod goes on,
 * its VM unwound and its garbage collected. At the Nth strike since it was loaded
 * (mods_limits.strikes) the mod is "disabled": its VM is closed and its events skipped, logged
 * at error. A mod gets at most one strike per budget: after one it receives no more events
 * until the next budget. The caller and the other mods go on in every case.
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
#define MODS_API       1 /* the mod API this node implements: a manifest's api must be it */

struct mods;
struct metrics;

/* Per mod. memory_bytes: all the mod's Lua memory (its cap); instructions: VM instructions per
 * budget (see above; counted in steps of 100); time_ms: time running Lua per budget (stops a
 * loop of costly instructions, such as concatenating big strings, that the count alone lets
 * run long); 0 means none. strikes: the strike that disables a mod (the Nth since it was
 * loaded); 0 and 1 both mean the first. */
struct mods_limits {
    size_t memory_bytes;
    long instructions;
    long time_ms;
    int strikes;
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

/* Load every mod of dir: each directory dir/NAME/ (NAME of letters, digits, '_' and '-') with
 * NAME/manifest.lua and NAME/init.lua, dependencies first, then by the manifests' order, then
 * by name; that is the set's order. A missing dir is an empty set. A mod that does not load
 * stays in the set as "failed" with its error ("file:line: message"); so does a file dir/X.lua
 * (named "X.lua": single-file mods are no more) to tell its author. Returns NULL with a message
 * in err only when dir exists but cannot be read. lim and host are copied; metrics is borrowed
 * and may be NULL (no metrics). */
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

/* The i-th mod of the set (0 <= i < mods_count), in the set's order. The strings belong to the
 * set and live as long as it. */
struct mods_info {
    const char *name;
    const char *version;     /* the manifest's; NULL when the manifest did not load */
    const char *state;       /* "running" | "failed" | "disabled" */
    const char *error;       /* why it failed or was disabled; NULL while running */
    int strikes;             /* strikes since it was loaded */
    const char *last_strike; /* why the latest one (as in error); NULL: none */
};
int mods_count(const struct mods *m);
void mods_info(const struct mods *m, int i, struct mods_info *out);
/* Push the list of m (NULL: empty) on L: { {name, version, state, error, strikes, last_strike},
 * ... } in load order (absent fields: none). */
typedef struct lua_State lua_State;
void mods_push_list(const struct mods *m, lua_State *L);

#endif
