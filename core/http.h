/* http.h -- HTTP/1.1 server on libevent: listener, connections, parsing (http-parser), limits.
 *
 * One request per connection is in flight at a time; pipelined requests wait in the input
 * buffer and are served in order. While a request is in flight the connection does not read
 * (back-pressure). A request the dispatcher answers before returning (no I/O) is written
 * together with the others of the same read: one write for a pipelined batch.
 *
 * Limits: header bytes (431), body bytes (413, refused as soon as Content-Length says so,
 * without reading it), header/body/idle/write timeouts, max connections (503 then close).
 * A malformed request gets 400 and the connection is closed. */
#ifndef CORE_HTTP_H
#define CORE_HTTP_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct http_server;
struct http_conn;

struct http_opts {
    const char *host; /* copied */
    int port;         /* 0: any free port (see http_server_port) */
    int backlog;
    int reuseport; /* SO_REUSEPORT: several nodes on one port */
    int max_connections;
    int max_header_bytes;
    int max_body_bytes;
    int header_timeout_ms; /* from the first byte of a request to the end of its headers */
    int body_timeout_ms;   /* from the end of the headers to the end of the body */
    int idle_timeout_ms;   /* keep-alive: between requests */
    int write_timeout_ms;  /* output pending without progress */
    struct ipcap *ipcap;   /* connections per client address, capped (NULL: none); a
                              connection handed over by http_detach keeps its place */
};

struct http_header {
    const char *name; /* lower case */
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* A request. Everything is borrowed from the connection and valid until http_respond. */
struct http_req {
    const char *method; /* "GET", static */
    size_t method_len;
    const char *path; /* raw, percent-encoded, not NUL-terminated */
    size_t path_len;
    const char *query; /* after '?', may be empty */
    size_t query_len;
    const struct http_header *headers;
    int nheaders;
    const char *body; /* de-chunked */
    size_t body_len;
    const char *request_id; /* NUL-terminated: X-Request-Id from the client if sane, else new */
    const char *remote_ip;  /* NUL-terminated */
    int head_only;          /* HEAD: the body of the response is not sent */
    void *ud;               /* free for the dispatcher */
    const char *route;      /* the route it matched, for metrics ("GET /api/x"; static or
                               living as long as the server); NULL: none */
    double started;         /* monotonic seconds when it was dispatched */
    struct http_conn *conn; /* private */
};

/* Called for every complete request; must lead to exactly one http_respond for it, now or
 * later. */
typedef void http_dispatch_cb(struct http_req *req, void *ud);

/* Told of every response to a dispatched request, as it is sent: its status and the seconds
 * since dispatch (metrics). */
typedef void http_response_cb(const struct http_req *req, int status, double seconds, void *ud);

/* Listen. Returns NULL with a message in err on failure (bind, listen). */
struct http_server *http_server_new(struct event_base *base, const struct http_opts *opts,
                                    http_dispatch_cb *cb, void *ud, char *err, size_t cap);
/* Close the listener and every connection. Requests in flight must have been answered. */
void http_server_free(struct http_server *s);
/* The bound port. */
int http_server_port(const struct http_server *s);
/* Set the response observer (NULL: none). */
void http_server_on_response(struct http_server *s, http_response_cb *cb, void *ud);
/* Stop accepting; close idle connections now and the others after their current response. */
void http_server_drain(struct http_server *s);
/* Open connections / requests in flight. */
int http_server_connections(const struct http_server *s);
int http_server_inflight(const struct http_server *s);
/* Counters since http_server_new (metrics). A connection upgraded to WebSocket counts here
 * for the bytes of its HTTP request (and of whatever came with it). */
struct http_stats {
    uint64_t accepted;  /* connections taken */
    uint64_t refused;   /* connections answered 503 and closed at once: full or draining */
    uint64_t bytes_in;  /* read from sockets */
    uint64_t bytes_out; /* written to sockets */
};
void http_server_stats(const struct http_server *s, struct http_stats *out);

/* Answer req: copies body (len bytes). extra_headers: complete "Name: value\r\n" lines, or
 * NULL. Exactly once per request; req is invalid afterwards. */
void http_respond(struct http_req *req, int status, const char *content_type, const char *body,
                  size_t len, const char *extra_headers, size_t extra_len);
/* Answer with the error shape of API.md: {"error":{"code","message","details":{},
 * "request_id"}}. code and message are escaped here. */
void http_respond_error(struct http_req *req, int status, const char *code, const char *message);
/* The connection of req, taken away from HTTP for another protocol (a WebSocket upgrade). */
struct http_detached {
    int fd;         /* the socket, non-blocking; the caller owns it now */
    char *in;       /* bytes that followed the request (the other protocol's first bytes); */
    size_t in_len;  /*   owned by the caller (free), may be NULL */
    char *out;      /* answers to earlier requests not yet written; write them first; */
    size_t out_len; /*   owned by the caller (free), may be NULL */
    char remote_ip[46];
};

/* Take req's connection away from HTTP: req must be in flight (not answered). The HTTP side
 * of the connection is freed and req is invalid afterwards. Returns 0 and fills d, or -1 when
 * the connection is already dead (the peer left): then nothing is taken and req is freed. */
int http_detach(struct http_req *req, struct http_detached *d);
/* Is req a WebSocket upgrade (GET, Connection: upgrade, Upgrade: websocket)? */
int http_req_is_upgrade(const struct http_req *req);

/* The event base of req's server: for a dispatcher that answers later. */
struct event_base *http_req_base(const struct http_req *req);
/* Value of header lname (lower case), or NULL; *len receives its length. */
const char *http_req_header(const struct http_req *req, const char *lname, size_t *len);
/* Reason phrase of a status code ("Not Found"). */
const char *http_status_text(int status);
/* Write the error body into buf (for callers that build their own response); returns length. */
size_t http_error_body(char *buf, size_t cap, const char *code, const char *message,
                       const char *request_id);

#endif
