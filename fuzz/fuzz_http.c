/* fuzz_http.c -- core/http.c: the HTTP/1.1 request path (http-parser callbacks, header and
 * body limits, chunked bodies, pipelining, keep-alive) on fuzzed bytes from a client.
 *
 * http.c parses on its own connections, so this drives a real server on 127.0.0.1 (one
 * server, made once): each input is written by a fresh client connection, which then
 * half-closes; the event loop runs until the server has closed that connection. Every
 * request is answered at once with 200 and a small body, as a route that does no I/O would.
 * Short timeouts (200 ms) bound a stuck connection; one that never closes is a hang that
 * libFuzzer reports. Slower than an in-memory target (a connection per input). */
#include "fuzzio.h"
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct event_base *B;
static struct http_server *S;
static struct sockaddr_in ADDR;

static void dispatch(struct http_req *req, void *ud)
{
    char body[64];
    int n =
        snprintf(body, sizeof body, "%.*s %zu", (int) req->method_len, req->method, req->body_len);
    http_respond(req, 200, "text/plain", body, (size_t) n, NULL, 0);
}

static void setup(void)
{
    B = event_base_new();
    struct http_opts o = {
        .host = "127.0.0.1",
        .port = 0,
        .backlog = 64,
        .max_connections = 64,
        .max_header_bytes = 8192,
        .max_body_bytes = 65536,
        .header_timeout_ms = 200,
        .body_timeout_ms = 200,
        .idle_timeout_ms = 200,
        .write_timeout_ms = 200,
    };
    char err[256];
    S = http_server_new(B, &o, dispatch, NULL, err, sizeof err);
    if (B == NULL || S == NULL) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
    ADDR.sin_family = AF_INET;
    ADDR.sin_port = htons((uint16_t) http_server_port(S));
    ADDR.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

/* connect, which libFuzzer's SIGALRM (its -timeout timer) may interrupt: then the connection
 * goes on in the background, and poll says when it is done */
static int connected(int fd)
{
    if (connect(fd, (struct sockaddr *) &ADDR, sizeof ADDR) == 0)
        return 1;
    if (errno != EINTR)
        return 0;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    while (poll(&p, 1, -1) < 0)
        if (errno != EINTR)
            return 0;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        errno = err;
        return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (S == NULL)
        setup();
    /* a new source address per input (127.1.0.0/16, in turn): the server closes first, and
     * its TIME_WAIT sockets would exhaust one address's ephemeral ports within a minute */
    static unsigned turn;
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f010000u | (turn++ & 0xffffu));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *) &src, sizeof src) != 0 || !connected(fd)) {
        perror("fuzz_http: connect"); /* the harness's own failure, not the server's */
        abort();
    }
    fuzz_feed(B, fd, data, size, NULL);
    close(fd);
    while (http_server_connections(S) > 0)
        event_base_loop(B, EVLOOP_ONCE);
    return 0;
}
