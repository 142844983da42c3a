/* realtime.h -- WebSocket sessions of the node: the /ws upgrade, a session per connection,
 * messages to the Lua handlers of routes.lua's `ws` table (one at a time per connection, in
 * order), and the live world they play in (core/world.c).
 *
 * A session has an id (a number, never reused while the node runs) that Lua code holds instead
 * of a pointer: a session that ends makes its id dead, and every call with a dead id is a
 * no-op. */
#ifndef CORE_REALTIME_H
#define CORE_REALTIME_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct http_req;
struct gate_identity;
struct script;
struct auth;
struct world;
struct ws_opts;
struct realtime;
struct rt_sess;

struct realtime_opts {
    double view_radius;   /* interest management: who sees whom */
    int session_check_ms; /* re-check each connection's session (ban, logout) this often */
    int queue_max;        /* messages waiting while one runs; beyond: "busy" error */
    int grace_ms;         /* a lost connection's player stays in the world this long (0: leaves) */
};

/* ws_opts and opts copied; auth borrowed (may be NULL: no re-checks). */
struct realtime *realtime_new(struct event_base *base, const struct ws_opts *ws,
                              const struct realtime_opts *opts, struct auth *auth);
/* Set once the Lua host exists (messages before that are refused). */
void realtime_set_script(struct realtime *rt, struct script *s);
/* Close every connection (1001) and free. */
void realtime_free(struct realtime *rt);
/* Shutdown: close handshakes with 1001 "going away"; refuse new connections. */
void realtime_drain(struct realtime *rt);
int realtime_count(const struct realtime *rt);
/* The counters of the WebSocket server (ws.h): connections accepted, bytes in and out... */
struct ws_stats;
void realtime_ws_stats(const struct realtime *rt, struct ws_stats *out);
struct world *realtime_world(struct realtime *rt);

/* GET /ws after the gate let it through (id: the signed-in account): answers 400/503 itself,
 * or takes the connection over. */
void realtime_upgrade(struct realtime *rt, struct http_req *req, const struct gate_identity *id);

/* ---- for the bindings (mmo.ws, mmo.world) ---------------------------------------------- */

/* The live session of id, or NULL. */
struct rt_sess *realtime_sess(struct realtime *rt, uint64_t id);
uint64_t realtime_sess_id(const struct rt_sess *s);
int64_t realtime_sess_account(const struct rt_sess *s);
int64_t realtime_sess_player(const struct rt_sess *s);
/* Send a JSON text to session id: 0, or ERR_CLOSED (gone, closing, or too slow). */
int realtime_send(struct realtime *rt, uint64_t id, const char *text, size_t len);
void realtime_close(struct realtime *rt, uint64_t id, int code, const char *reason);
/* The session's player joined from another connection (here or on another node): tell it
 * ("replaced" error), forget its player, close it with 4002. */
void realtime_replace(struct realtime *rt, uint64_t id);
/* Close every connection of an account (ban) or of one session id (logout); returns how many. */
int realtime_close_account(struct realtime *rt, int64_t account, int code, const char *reason);
int realtime_close_sid(struct realtime *rt, const char *sid, int code, const char *reason);
/* The session plays player (joined the world); 0 unsets. speed: its speed now, until
 * speed_until (epoch seconds; 0: for good), then base_speed (a buff runs out). */
void realtime_set_player(struct realtime *rt, uint64_t id, int64_t player, double speed,
                         double speed_until, double base_speed);
/* 1 when presence should be written again for id (at most once per interval_ms). */
int realtime_touch(struct realtime *rt, uint64_t id, int interval_ms);

/* Called by the Lua host when a message's handler has ended (sessions run one at a time). */
void realtime__message_done(struct realtime *rt, uint64_t id);

#endif
