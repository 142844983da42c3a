/* control.h -- the node's control socket (control.c): local commands to a running node. */
#ifndef MMO_CONTROL_H
#define MMO_CONTROL_H

#include <stddef.h>

struct event_base;
struct script;
struct control;
struct conf;

/* The socket path of pattern with "{node}" replaced by node_id; -1 if it does not fit. */
int control_path(const char *pattern, const char *node_id, char *out, size_t cap);
/* Listen on path (mode 0600; its directory is made 0700 if missing). NULL with err when the
 * path is too long, taken by a running node, or cannot be bound. */
struct control *control_new(struct event_base *base, const char *path, struct script *script,
                            char *err, size_t cap);
/* Stop listening and remove the socket file. */
void control_free(struct control *c);
/* The client: send cmd (reload, rollback, status), put the node's one-line JSON answer in
 * out. -1 with a reason in out when the node cannot be reached or does not answer in time. */
int control_command(const char *path, const char *cmd, int timeout_s, char *out, size_t cap);

/* `mmo reload | rollback | scripts`: the command to the node of config c; prints its answer;
 * the exit status (0: done). */
int control_cli(const struct conf *c, const char *cmd);

#endif
