/* fuzz_ws.c -- core/ws.c: client frames and messages (wslay's parser behind our callbacks:
 * masking, fragments and reassembly, the size limit, UTF-8, control frames, close codes, the
 * rate limit), on fuzzed bytes after a completed handshake.
 *
 * ws.c runs on a socket inside libevent, so each input gets a socketpair: one end is handed
 * to ws_accept as core/realtime.c does after http_detach; the other plays the client. Byte 0
 * says how much of the rest arrives with the request (http_detached.in, the bytes that
 * followed the upgrade request) and the rest is written to the socket, which is then
 * half-closed; the loop runs until the connection's closed callback has fired. Each message
 * is echoed, as a handler that answers would. Limits are small (1 KiB messages, a burst of 8)
 * so the refusals are reachable; 200 ms timeouts bound a stuck connection. */
#include "fuzzio.h"
#include "http.h"
#include "ws.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/util.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="

static struct event_base *B;
static struct ws_server *S;
static int closed;

static void on_message(struct ws_conn *c, const char *text, size_t len, void *ud)
{
    ws_send_text(c, text, len);
}

static void on_closed(struct ws_conn *c, int code, void *ud)
{
    closed = 1;
}

static void setup(void)
{
    B = event_base_new();
    struct ws_opts o = {
        .max_connections = 4,
        .max_message_bytes = 1024,
        .max_queued_bytes = 65536,
        .idle_timeout_ms = 200,
        .ping_interval_ms = 100,
        .close_timeout_ms = 200,
        .msg_rate = 1000,
        .msg_burst = 8,
    };
    S = B ? ws_server_new(B, &o, on_message, on_closed, NULL) : NULL;
    if (S == NULL)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (S == NULL)
        setup();
    if (size < 1)
        return 0;
    size_t early = data[0] < size - 1 ? data[0] : size - 1; /* bytes given with the request */
    data++;
    size--;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 || evutil_make_socket_nonblocking(sv[0]))
        abort();
    struct http_detached d;
    memset(&d, 0, sizeof d);
    d.fd = sv[0];
    snprintf(d.remote_ip, sizeof d.remote_ip, "127.0.0.1");
    if (early) {
        d.in = malloc(early);
        memcpy(d.in, data, early);
        d.in_len = early;
    }
    closed = 0;
    if (ws_accept(S, &d, KEY, strlen(KEY)) == NULL)
        abort(); /* one connection at a time, a valid key: never refused */
    /* the rest goes through the socket; then the loop runs until on_closed has fired */
    fuzz_feed(B, sv[1], data + early, size - early, &closed);
    close(sv[1]);
    while (!closed || ws_server_count(S) > 0)
        event_base_loop(B, EVLOOP_ONCE);
    return 0;
}
