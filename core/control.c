/* control.c -- the node's control socket: `mmo reload`, `mmo rollback` and `mmo scripts` on the
 * same machine talk to the running node through it.
 *
 * A Unix stream socket (control.socket in config.lua; "{node}" in the path becomes the node
 * id), created with mode 0600 in a directory made 0700: who may write to it is who may run
 * the node. One command per connection, one line each way:
 *
 *   -> reload | rollback | status
 *   <- {"ok":true,"version":5,"hash":"..."}  |  {"ok":false,"error":"...","file":"...","line":3}
 *
 * Every connection has a read and a write timeout; a line longer than 64 bytes is refused. */
#include "control.h"
#include "conf.h"
#include "log.h"
#include "mem.h"
#include "script.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CONTROL_TIMEOUT_S 10
#define MAX_CLIENTS       16

struct control {
    struct evconnlistener *listener;
    struct script *script;
    char path[108];
    int clients;
};

struct client {
    struct control *c;
    struct bufferevent *bev;
};

int control_path(const char *pattern, const char *node_id, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = pattern; *p; p++) {
        if (strncmp(p, "{node}", 6) == 0) {
            size_t n = strlen(node_id);
            if (o + n >= cap)
                return -1;
            memcpy(out + o, node_id, n);
            o += n;
            p += 5;
        } else {
            if (o + 1 >= cap)
                return -1;
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    return o > 0 ? 0 : -1;
}

static void client_free(struct client *cl)
{
    cl->c->clients--;
    bufferevent_free(cl->bev);
    free(cl);
}

static void on_written(struct bufferevent *bev, void *arg)
{
    struct client *cl = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        client_free(cl);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    client_free(arg);
}

static void reply_result(struct client *cl, int rc, const char *err)
{
    struct evbuffer *out = bufferevent_get_output(cl->bev);
    if (rc == 0) {
        char hash[65];
        script_hash(cl->c->script, hash, sizeof hash);
        evbuffer_add_printf(out, "{\"ok\":true,\"version\":%u,\"hash\":\"%s\"}\n",
                            script_version(cl->c->script), hash);
        return;
    }
    char file[512], efile[1024], eerr[2048];
    int line;
    script_error_location(err, file, sizeof file, &line);
    log_json_escape(eerr, sizeof eerr, err, strlen(err));
    log_json_escape(efile, sizeof efile, file, strlen(file));
    if (line > 0)
        evbuffer_add_printf(out, "{\"ok\":false,\"error\":\"%s\",\"file\":\"%s\",\"line\":%d}\n",
                            eerr, efile, line);
    else
        evbuffer_add_printf(out, "{\"ok\":false,\"error\":\"%s\"}\n", eerr);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct client *cl = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n;
    char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF);
    if (line == NULL) {
        if (evbuffer_get_length(in) > 64)
            client_free(cl);
        return;
    }
    bufferevent_disable(bev, EV_READ);
    char err[1024];
    if (strcmp(line, "reload") == 0 || strcmp(line, "rollback") == 0) {
        int rc = script_reload(cl->c->script, "control", line[1] == 'o', err, sizeof err);
        reply_result(cl, rc, err);
    } else if (strcmp(line, "status") == 0) {
        reply_result(cl, 0, NULL);
    } else {
        evbuffer_add_printf(bufferevent_get_output(bev),
                            "{\"ok\":false,\"error\":\"unknown command (reload, rollback, "
                            "status)\"}\n");
    }
    free(line);
    bufferevent_setcb(bev, NULL, on_written, on_event, cl);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    struct control *c = arg;
    if (c->clients >= MAX_CLIENTS) {
        close(fd);
        return;
    }
    struct client *cl = xcalloc(1, sizeof *cl);
    cl->c = c;
    cl->bev = bufferevent_socket_new(evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
    c->clients++;
    struct timeval tv = {CONTROL_TIMEOUT_S, 0};
    bufferevent_set_timeouts(cl->bev, &tv, &tv);
    bufferevent_setcb(cl->bev, on_read, NULL, on_event, cl);
    bufferevent_enable(cl->bev, EV_READ | EV_WRITE);
}

/* is someone listening on path? */
static int in_use(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int used = connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0;
    close(fd);
    return used;
}

static void make_parent(const char *path)
{
    char dir[108];
    snprintf(dir, sizeof dir, "%s", path);
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        mkdir(dir, 0700);
        *p = '/';
    }
}

struct control *control_new(struct event_base *base, const char *path, struct script *script,
                            char *err, size_t cap)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, cap, "control.socket: the path is longer than %zu bytes",
                 sizeof sa.sun_path - 1);
        return NULL;
    }
    if (in_use(path)) {
        snprintf(err, cap, "control.socket %s: another node listens there", path);
        return NULL;
    }
    make_parent(path);
    unlink(path); /* a node that died left it */
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    mode_t old = umask(0177);
    struct control *c = xcalloc(1, sizeof *c);
    c->script = script;
    snprintf(c->path, sizeof c->path, "%s", path);
    c->listener = evconnlistener_new_bind(base, on_accept, c, LEV_OPT_CLOSE_ON_FREE, 16,
                                          (struct sockaddr *) &sa, (int) sizeof sa);
    umask(old);
    if (c->listener == NULL) {
        snprintf(err, cap, "control.socket %s: %s", path, strerror(errno));
        free(c);
        return NULL;
    }
    return c;
}

void control_free(struct control *c)
{
    if (c == NULL)
        return;
    evconnlistener_free(c->listener);
    unlink(c->path);
    free(c);
}

/* ---- the client side: mmo reload | rollback | scripts ---------------------------------- */

int control_command(const char *path, const char *cmd, int timeout_s, char *out, size_t cap)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(out, cap, "socket: %s", strerror(errno));
        return -1;
    }
    struct timeval tv = {timeout_s, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (connect(fd, (struct sockaddr *) &sa, sizeof sa) != 0) {
        snprintf(out, cap, "cannot reach the node at %s: %s (is it running with this config?)",
                 path, strerror(errno));
        close(fd);
        return -1;
    }
    char line[32];
    int ln = snprintf(line, sizeof line, "%s\n", cmd);
    if (write(fd, line, (size_t) ln) != ln) {
        snprintf(out, cap, "cannot send to the node: %s", strerror(errno));
        close(fd);
        return -1;
    }
    size_t got = 0;
    while (got + 1 < cap) {
        ssize_t r = read(fd, out + got, cap - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r < 0 && got == 0) {
                snprintf(out, cap, "no answer from the node: %s", strerror(errno));
                close(fd);
                return -1;
            }
            break;
        }
        got += (size_t) r;
        if (memchr(out, '\n', got))
            break;
    }
    out[got] = '\0';
    close(fd);
    if (got == 0) {
        snprintf(out, cap, "the node closed the connection without an answer");
        return -1;
    }
    return 0;
}

int control_cli(const struct conf *c, const char *cmd)
{
    char path[256], out[4096];
    if (c->control_socket[0] == '\0' ||
        control_path(c->control_socket, c->node_id, path, sizeof path) < 0) {
        fprintf(stderr, "mmo: %s: control.socket is not set in the config\n", cmd);
        return 1;
    }
    const char *line = strcmp(cmd, "scripts") == 0 ? "status" : cmd;
    if (control_command(path, line, 60, out, sizeof out) < 0) {
        fprintf(stderr, "mmo: %s: %s\n", cmd, out);
        return 1;
    }
    char *nl = strchr(out, '\n');
    if (nl)
        *nl = '\0';
    /* the answer is our own one-line JSON: print it for scripts, and a sentence for people */
    printf("%s\n", out);
    if (strncmp(out, "{\"ok\":true", 10) == 0)
        return 0;
    fprintf(stderr, "mmo: %s failed; the running scripts stay in use\n", cmd);
    return 1;
}
