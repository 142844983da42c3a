/* http.c -- HTTP/1.1 connections: read, parse with http-parser, dispatch, write.
 *
 * Ownership: the server owns its connections; a connection owns its input buffer, body
 * buffer, output evbuffer and the one request in flight (embedded, pointing into the input
 * buffer). A connection whose peer went away while a request is in flight is freed when that
 * request is answered (http_respond), never before.
 *
 * Reads go straight to recv() into the connection's buffer (no bufferevent: one system call
 * fewer per request); responses are appended to an evbuffer and written with one writev per
 * batch. */
#include "http.h"
#include "ipcap.h"
#include "err.h"
#include "log.h"
#include "mem.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <http_parser.h>

#define MAX_HEADERS 100
#define READ_CHUNK  16384
#define REQ_ID_LEN  64

enum cstate {
    C_IDLE,     /* between requests */
    C_HEAD,     /* reading a request's headers */
    C_BODY,     /* reading its body */
    C_INFLIGHT, /* the dispatcher has it */
    C_LINGER,   /* answered and shut for writing; reading and dropping what the peer still sends */
};

struct hdr_off {
    size_t name, name_len, value, value_len;
};

/* What only a request being read or served needs; an idle connection holds none of it (nor
 * an input buffer), so 10,000 idle keep-alive connections cost ~1 KB each. */
struct reqbuf {
    struct hdr_off hdrs[MAX_HEADERS];
    struct http_header headers[MAX_HEADERS];
};

#define POOL_MAX 1024 /* spare input buffers and reqbufs kept for reuse */

struct http_conn {
    struct http_server *srv;
    struct http_conn *prev, *next;
    int fd;
    struct event *rev, *wev, *timer;
    enum cstate state;
    http_parser parser;
    char *in;
    size_t in_len, in_cap, parsed;
    size_t req_start;  /* offset of the current request's first byte */
    size_t head_end;   /* offset just past its headers (C_BODY) */
    struct reqbuf *rb; /* NULL while idle */
    int nhdrs;
    int hdr_in_value; /* last callback was a header value */
    size_t url_off, url_len;
    char *body;
    size_t body_len, body_cap;
    int fail_status; /* set by a parser callback to refuse: 400 (a header name with white
                      * space), 413, 431 */
    int expect_continue;
    struct evbuffer *out;
    unsigned close_after : 1;  /* close once the output is written */
    unsigned dead : 1;         /* peer gone or error: free as soon as nothing is in flight */
    unsigned batching : 1;     /* inside conn_run: responses are flushed once at its end */
    unsigned reading : 1;      /* rev is added (edge-triggered: read until EAGAIN) */
    unsigned read_blocked : 1; /* stopped reading with data maybe left in the socket */
    unsigned peer_eof : 1;     /* the peer shut its side: close once answered */
    unsigned rdhup : 1;        /* EV_CLOSED seen: the peer's FIN waits behind the data */
    unsigned detached : 1;     /* taken by http_detach during conn_run: free on the way out */
    unsigned writing : 1;      /* wev is added */
    struct http_req req;
    char request_id[REQ_ID_LEN + 1];
    char remote_ip[INET6_ADDRSTRLEN];
};

struct http_server {
    struct event_base *base;
    struct evconnlistener *listener;
    http_dispatch_cb *dispatch;
    void *ud;
    http_response_cb *on_response;
    void *on_response_ud;
    struct http_opts o;
    char *host;
    int port;
    int nconns;
    int inflight;
    int draining;
    struct http_conn *conns;
    const struct timeval *t_header, *t_body, *t_idle, *t_write, *t_linger;
    struct event *accept_retry;
    char *spare_in[POOL_MAX];
    int nspare_in;
    struct reqbuf *spare_rb[POOL_MAX];
    int nspare_rb;
    uint64_t req_seq;
    struct http_stats st;
    char req_prefix[16];
    time_t date_at;
    char date[40];
};

static http_parser_settings SETTINGS;

static void conn_free(struct http_conn *c);
static void conn_run(struct http_conn *c);
static int conn_flush(struct http_conn *c);

/* ---- small helpers -------------------------------------------------------------------- */

const char *http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

size_t http_error_body(char *buf, size_t cap, const char *code, const char *message,
                       const char *request_id)
{
    char ecode[128], emsg[512];
    log_json_escape(ecode, sizeof ecode, code, strlen(code));
    log_json_escape(emsg, sizeof emsg, message, strlen(message));
    int n = snprintf(buf, cap,
                     "{\"error\":{\"code\":\"%s\",\"message\":\"%s\",\"details\":{},"
                     "\"request_id\":\"%s\"}}",
                     ecode, emsg, request_id ? request_id : "");
    return n < 0 ? 0 : ((size_t) n < cap ? (size_t) n : cap - 1);
}

static const char *date_header(struct http_server *s)
{
    time_t now = time(NULL);
    if (now != s->date_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(s->date, sizeof s->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        s->date_at = now;
    }
    return s->date;
}

static int sane_request_id(const char *v, size_t len)
{
    if (len == 0 || len > REQ_ID_LEN)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = v[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.' || ch == ':'))
            return 0;
    }
    return 1;
}

/* Best effort: one error response on a socket the caller closes next (no buffering). */
static void send_and_close(struct http_server *s, int fd, int status, const char *code,
                           const char *message, const char *request_id)
{
    char body[256], resp[768];
    size_t bn = http_error_body(body, sizeof body, code, message, request_id);
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 %d %s\r\nServer: mmo\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nX-Request-Id: %s\r\nConnection: close\r\n%s\r\n%s",
                     status, http_status_text(status), bn, request_id,
                     status == 503 ? "Retry-After: 1\r\n" : "", body);
    if (n > 0) {
        ssize_t w = send(fd, resp, (size_t) n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0)
            s->st.bytes_out += (uint64_t) w;
    }
}

static void new_request_id(struct http_conn *c)
{
    snprintf(c->request_id, sizeof c->request_id, "%s%llx", c->srv->req_prefix,
             (unsigned long long) ++c->srv->req_seq);
}

/* ---- buffers: taken when a request starts, given back when the connection is idle --------- */

static void conn_acquire(struct http_conn *c)
{
    struct http_server *s = c->srv;
    if (c->in == NULL) {
        c->in = s->nspare_in ? s->spare_in[--s->nspare_in] : xmalloc(READ_CHUNK);
        c->in_cap = READ_CHUNK;
        c->in_len = c->parsed = 0;
    }
    if (c->rb == NULL)
        c->rb = s->nspare_rb ? s->spare_rb[--s->nspare_rb] : xmalloc(sizeof *c->rb);
}

static void conn_release(struct http_conn *c)
{
    struct http_server *s = c->srv;
    if (c->in) {
        if (c->in_cap == READ_CHUNK && s->nspare_in < POOL_MAX)
            s->spare_in[s->nspare_in++] = c->in;
        else
            free(c->in);
        c->in = NULL;
        c->in_cap = c->in_len = c->parsed = 0;
    }
    if (c->rb) {
        if (s->nspare_rb < POOL_MAX)
            s->spare_rb[s->nspare_rb++] = c->rb;
        else
            free(c->rb);
        c->rb = NULL;
    }
    free(c->body);
    c->body = NULL;
    c->body_len = c->body_cap = 0;
}

/* ---- timers and events ----------------------------------------------------------------- */

static void arm_timer(struct http_conn *c, const struct timeval *tv)
{
    if (tv)
        evtimer_add(c->timer, tv);
    else
        evtimer_del(c->timer);
}

static void want_read(struct http_conn *c, int on)
{
    if (on && !c->reading) {
        event_add(c->rev, NULL);
        c->reading = 1;
    } else if (!on && c->reading) {
        event_del(c->rev);
        c->reading = 0;
    }
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct http_conn *c = arg;
    switch (c->state) {
    case C_HEAD:
    case C_BODY:
        /* a slow client: say so if we can, then close */
        log_debug("http", "request timeout from %s", c->remote_ip);
        new_request_id(c);
        send_and_close(c->srv, c->fd, 408, "request_timeout", "request too slow", c->request_id);
        conn_free(c);
        return;
    case C_IDLE:
        if (evbuffer_get_length(c->out) > 0)
            log_debug("http", "write timeout to %s", c->remote_ip);
        conn_free(c);
        return;
    case C_INFLIGHT:
        /* write timeout while the next request runs: the peer stopped reading */
        c->dead = 1;
        want_read(c, 0);
        return;
    case C_LINGER: conn_free(c); return;
    }
}

/* ---- parser callbacks: offsets into c->in ----------------------------------------------- */

static struct http_conn *P(http_parser *p)
{
    return p->data;
}

static int cb_message_begin(http_parser *p)
{
    struct http_conn *c = P(p);
    c->nhdrs = 0;
    c->hdr_in_value = 0;
    c->url_len = 0;
    c->body_len = 0;
    c->expect_continue = 0;
    return 0;
}

/* The head of a request (request line + headers) may not grow past max_header_bytes. */
static int head_too_big(struct http_conn *c, const char *at, size_t len)
{
    if ((size_t) (at + len - c->in) - c->req_start > (size_t) c->srv->o.max_header_bytes) {
        c->fail_status = 431;
        return 1;
    }
    return 0;
}

static int cb_url(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = P(p);
    if (head_too_big(c, at, len))
        return -1;
    if (c->url_len == 0)
        c->url_off = (size_t) (at - c->in);
    c->url_len += len;
    return 0;
}

static int cb_header_field(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = P(p);
    if (head_too_big(c, at, len))
        return -1;
    /* "Transfer-Encoding : chunked" is no header this parser knows, but a proxy in front may
     * read it as one: the two would disagree on where the request ends (smuggling). RFC 9112
     * 5.1: white space between a field name and its colon is refused with 400. */
    if (memchr(at, ' ', len) || memchr(at, '\t', len)) {
        c->fail_status = 400;
        return -1;
    }
    if (c->nhdrs == 0 || c->hdr_in_value) {
        if (c->nhdrs == MAX_HEADERS) {
            c->fail_status = 431;
            return -1;
        }
        struct hdr_off *h = &c->rb->hdrs[c->nhdrs++];
        h->name = (size_t) (at - c->in);
        h->name_len = 0;
        h->value = 0;
        h->value_len = 0;
        c->hdr_in_value = 0;
    }
    c->rb->hdrs[c->nhdrs - 1].name_len += len;
    return 0;
}

static int cb_header_value(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = P(p);
    if (head_too_big(c, at, len))
        return -1;
    struct hdr_off *h = &c->rb->hdrs[c->nhdrs - 1];
    if (!c->hdr_in_value) {
        h->value = (size_t) (at - c->in);
        c->hdr_in_value = 1;
    }
    h->value_len += len;
    return 0;
}

static int cb_headers_complete(http_parser *p)
{
    struct http_conn *c = P(p);
    struct http_server *s = c->srv;
    /* everything the request table needs ends here; later bytes (CRLFs, body) may be dropped */
    c->head_end = c->url_off + c->url_len;
    if (c->nhdrs > 0)
        c->head_end = c->rb->hdrs[c->nhdrs - 1].value + c->rb->hdrs[c->nhdrs - 1].value_len;
    for (int i = 0; i < c->nhdrs; i++) {
        struct hdr_off *h = &c->rb->hdrs[i];
        char *name = c->in + h->name;
        for (size_t k = 0; k < h->name_len; k++)
            if (name[k] >= 'A' && name[k] <= 'Z')
                name[k] = (char) (name[k] + 32);
        if (h->name_len == 6 && memcmp(name, "expect", 6) == 0 && h->value_len == 12 &&
            strncasecmp(c->in + h->value, "100-continue", 12) == 0)
            c->expect_continue = 1;
    }
    int has_body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENTLENGTH) && p->content_length);
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > (uint64_t) s->o.max_body_bytes) {
        c->fail_status = 413;
        return -1;
    }
    if (has_body) {
        c->state = C_BODY;
        arm_timer(c, s->t_body);
        if (c->expect_continue)
            evbuffer_add(c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
    return 0;
}

static int cb_body(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = P(p);
    if (c->body_len + len > (size_t) c->srv->o.max_body_bytes) {
        c->fail_status = 413;
        return -1;
    }
    if (c->body_len + len > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : 1024;
        while (cap < c->body_len + len)
            cap *= 2;
        c->body = xrealloc(c->body, cap);
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    return 0;
}

static int cb_message_complete(http_parser *p)
{
    http_parser_pause(p, 1);
    return 0;
}

/* ---- responses ---------------------------------------------------------------------------- */

static char *put(char *o, const char *src, size_t n)
{
    memcpy(o, src, n);
    return o + n;
}

#define PUTS(o, lit) put((o), (lit), sizeof(lit) - 1)

static char *put_uint(char *o, size_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char) ('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *o++ = tmp[--n];
    return o;
}

/* The response head is built by hand (no printf: it is on every request). Every piece but
 * the content type and the extra headers has a known bound, and those two are appended to
 * the buffer directly. */
static void append_response(struct http_conn *c, int status, const char *ctype, const char *body,
                            size_t len, const char *extra, size_t extra_len, int head_only)
{
    struct http_server *s = c->srv;
    char head[384];
    char *o = head;
    const char *reason = http_status_text(status);
    o = PUTS(o, "HTTP/1.1 ");
    o = put_uint(o, (size_t) (status >= 100 && status <= 999 ? status : 500));
    *o++ = ' ';
    o = put(o, reason, strlen(reason)); /* at most 31 bytes */
    o = PUTS(o, "\r\nServer: mmo\r\nDate: ");
    o = put(o, date_header(s), 29);
    o = PUTS(o, "\r\nContent-Length: ");
    o = put_uint(o, len);
    o = PUTS(o, "\r\nX-Request-Id: ");
    o = put(o, c->request_id, strlen(c->request_id)); /* at most REQ_ID_LEN */
    o = PUTS(o, "\r\n");
    if (c->close_after)
        o = PUTS(o, "Connection: close\r\n");
    o = PUTS(o, "Content-Type: ");
    evbuffer_add(c->out, head, (size_t) (o - head));
    if (ctype == NULL)
        ctype = "application/json";
    evbuffer_add(c->out, ctype, strlen(ctype));
    if (extra && extra_len) {
        evbuffer_add(c->out, "\r\n", 2);
        evbuffer_add(c->out, extra, extra_len);
        evbuffer_add(c->out, "\r\n", 2);
    } else {
        evbuffer_add(c->out, "\r\n\r\n", 4);
    }
    if (len && !head_only)
        evbuffer_add(c->out, body, len);
}

/* An error from the connection layer itself (no request handed out): answer and close. */
static void refuse(struct http_conn *c, int status, const char *code, const char *message)
{
    char body[512];
    c->close_after = 1;
    new_request_id(c);
    size_t n = http_error_body(body, sizeof body, code, message, c->request_id);
    append_response(c, status, "application/json", body, n, NULL, 0, 0);
    c->state = C_IDLE;
}

void http_respond(struct http_req *req, int status, const char *content_type, const char *body,
                  size_t len, const char *extra_headers, size_t extra_len)
{
    struct http_conn *c = req->conn;
    struct http_server *s = c->srv;
    CORE_ASSERT(c->state == C_INFLIGHT);
    if (s->on_response) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double t = (double) now.tv_sec + (double) now.tv_nsec / 1e9;
        s->on_response(req, status, t - req->started, s->on_response_ud);
    }
    s->inflight--;
    req->conn = NULL;
    if (c->dead) {
        conn_free(c);
        return;
    }
    if (s->draining)
        c->close_after = 1;
    append_response(c, status, content_type, body, len, extra_headers, extra_len, req->head_only);
    c->state = C_IDLE;
    if (c->batching)
        return; /* conn_run goes on with the next pipelined request, then flushes once */
    conn_run(c);
}

void http_respond_error(struct http_req *req, int status, const char *code, const char *message)
{
    char body[768];
    size_t n = http_error_body(body, sizeof body, code, message, req->request_id);
    http_respond(req, status, "application/json", body, n, NULL, 0);
}

int http_req_is_upgrade(const struct http_req *req)
{
    struct http_conn *c = req->conn;
    size_t n;
    const char *up = http_req_header(req, "upgrade", &n);
    return c && c->parser.upgrade && req->method_len == 3 && up && n == 9 &&
           strncasecmp(up, "websocket", 9) == 0;
}

int http_detach(struct http_req *req, struct http_detached *d)
{
    struct http_conn *c = req->conn;
    struct http_server *s = c->srv;
    CORE_ASSERT(c->state == C_INFLIGHT);
    s->inflight--;
    req->conn = NULL;
    memset(d, 0, sizeof *d);
    if (c->dead) {
        conn_free(c);
        return -1;
    }
    d->fd = c->fd;
    snprintf(d->remote_ip, sizeof d->remote_ip, "%s", c->remote_ip);
    if (c->in && c->in_len > c->parsed) {
        d->in_len = c->in_len - c->parsed;
        d->in = xmalloc(d->in_len);
        memcpy(d->in, c->in + c->parsed, d->in_len);
    }
    d->out_len = evbuffer_get_length(c->out);
    if (d->out_len) {
        d->out = xmalloc(d->out_len);
        evbuffer_remove(c->out, d->out, d->out_len);
    }
    c->fd = -1; /* not closed by conn_free: it is d's now */
    c->state = C_IDLE;
    if (c->batching) {
        /* inside conn_run, which still holds c: it frees c when it unwinds */
        c->detached = 1;
        event_del(c->rev);
        event_del(c->wev);
        evtimer_del(c->timer);
        return 0;
    }
    conn_free(c);
    return 0;
}

struct event_base *http_req_base(const struct http_req *req)
{
    return req->conn->srv->base;
}

const char *http_req_header(const struct http_req *req, const char *lname, size_t *len)
{
    size_t ln = strlen(lname);
    for (int i = 0; i < req->nheaders; i++) {
        const struct http_header *h = &req->headers[i];
        if (h->name_len == ln && memcmp(h->name, lname, ln) == 0) {
            if (len)
                *len = h->value_len;
            return h->value;
        }
    }
    return NULL;
}

/* ---- the connection's state machine ------------------------------------------------------ */

static void dispatch(struct http_conn *c)
{
    struct http_server *s = c->srv;
    struct http_req *r = &c->req;
    struct http_parser_url u;
    const char *url = c->in + c->url_off;

    memset(r, 0, sizeof *r);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    r->started = (double) now.tv_sec + (double) now.tv_nsec / 1e9;
    r->conn = c;
    r->method = http_method_str((enum http_method) c->parser.method);
    r->method_len = strlen(r->method);
    r->head_only = c->parser.method == HTTP_HEAD;
    r->remote_ip = c->remote_ip;
    for (int i = 0; i < c->nhdrs; i++) {
        c->rb->headers[i].name = c->in + c->rb->hdrs[i].name;
        c->rb->headers[i].name_len = c->rb->hdrs[i].name_len;
        c->rb->headers[i].value = c->in + c->rb->hdrs[i].value;
        c->rb->headers[i].value_len = c->rb->hdrs[i].value_len;
    }
    r->headers = c->rb->headers;
    r->nheaders = c->nhdrs;
    r->body = c->body;
    r->body_len = c->body_len;

    size_t idlen;
    const char *id = http_req_header(r, "x-request-id", &idlen);
    if (id && sane_request_id(id, idlen)) {
        memcpy(c->request_id, id, idlen);
        c->request_id[idlen] = '\0';
    } else {
        new_request_id(c);
    }
    r->request_id = c->request_id;

    if (!http_should_keep_alive(&c->parser) || c->parser.upgrade)
        c->close_after = 1;
    c->state = C_INFLIGHT;
    s->inflight++;
    arm_timer(c, NULL);

    http_parser_url_init(&u);
    if (c->url_len == 0 || http_parser_parse_url(url, c->url_len, 0, &u) != 0 ||
        !(u.field_set & (1 << UF_PATH))) {
        http_respond_error(r, 400, "bad_request", "malformed request target");
        return;
    }
    r->path = url + u.field_data[UF_PATH].off;
    r->path_len = u.field_data[UF_PATH].len;
    if (u.field_set & (1 << UF_QUERY)) {
        r->query = url + u.field_data[UF_QUERY].off;
        r->query_len = u.field_data[UF_QUERY].len;
    } else {
        r->query = "";
    }
    s->dispatch(r, s->ud);
}

/* Parse and dispatch what is buffered, as long as no request is in flight. */
static void conn_process(struct http_conn *c)
{
    struct http_server *s = c->srv;
    while (c->state != C_INFLIGHT && !c->close_after && !c->detached && c->parsed < c->in_len) {
        if (c->state == C_IDLE) {
            c->state = C_HEAD;
            c->req_start = c->parsed;
            c->fail_status = 0;
            arm_timer(c, s->t_header);
        }
        size_t n =
            http_parser_execute(&c->parser, &SETTINGS, c->in + c->parsed, c->in_len - c->parsed);
        c->parsed += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            /* a request that waits on I/O leaves the read event armed (edge-triggered): no
             * epoll_ctl per request; what arrives meanwhile waits in the buffer */
            dispatch(c);
            continue;
        }
        if (e != HPE_OK) {
            if (c->fail_status == 413)
                refuse(c, 413, "body_too_large", "request body too large");
            else if (c->fail_status == 431 || e == HPE_HEADER_OVERFLOW)
                refuse(c, 431, "headers_too_large", "request headers too large");
            else if (c->fail_status == 400)
                refuse(c, 400, "bad_request", "white space in a header name");
            else
                refuse(c, 400, "bad_request", http_errno_description(e));
            return;
        }
        /* everything buffered was consumed; a message is still incomplete */
        if (c->state == C_HEAD && c->parsed - c->req_start > (size_t) s->o.max_header_bytes) {
            refuse(c, 431, "headers_too_large", "request headers too large");
            return;
        }
        break;
    }
    if (c->state == C_IDLE && c->parsed == c->in_len)
        c->parsed = c->in_len = 0;
}

/* Write what is pending. Returns -1 when the connection was freed. */
static int conn_flush(struct http_conn *c)
{
    struct http_server *s = c->srv;
    while (evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_write(c->out, c->fd);
        if (n > 0)
            s->st.bytes_out += (uint64_t) n;
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            c->dead = 1;
            break;
        }
        if (n == 0)
            break;
    }
    size_t pending = evbuffer_get_length(c->out);
    if (c->dead) {
        if (c->state == C_INFLIGHT) {
            want_read(c, 0); /* freed when its request is answered */
            return 0;
        }
        conn_free(c);
        return -1;
    }
    if (pending > 0) {
        if (!c->writing) {
            event_add(c->wev, NULL);
            c->writing = 1;
        }
        if (c->state != C_HEAD && c->state != C_BODY)
            arm_timer(c, s->t_write);
        return 0;
    }
    if (c->writing) {
        event_del(c->wev);
        c->writing = 0;
    }
    if (c->state == C_INFLIGHT || c->state == C_LINGER)
        return 0;
    if (c->close_after) {
        /* lingering close: stop writing, read and drop what the peer still sends for a while,
         * so that our answer is not destroyed by a reset (e.g. after a refused body) */
        shutdown(c->fd, SHUT_WR);
        c->state = C_LINGER;
        arm_timer(c, s->t_linger);
        event_active(c->rev, EV_READ, 0); /* drain what already waits: no new edge for it */
        return 0;
    }
    if (c->peer_eof && (c->state != C_IDLE || c->parsed == c->in_len)) {
        conn_free(c); /* all answered, and nothing more can come */
        return -1;
    }
    if (c->state == C_IDLE) {
        if (s->draining && c->parsed == c->in_len) {
            conn_free(c);
            return -1;
        }
        if (c->parsed == c->in_len) {
            arm_timer(c, s->t_idle);
            conn_release(c);
        }
    }
    /* idle, or the next request is half read: if reading stopped with data left in the
     * socket, nothing will wake us for it (edge-triggered): read now */
    if (c->read_blocked) {
        c->read_blocked = 0;
        event_active(c->rev, EV_READ, 0);
    }
    return 0;
}

/* Serve what is buffered, then write once. May free c. */
static void conn_run(struct http_conn *c)
{
    c->batching = 1;
    conn_process(c);
    c->batching = 0;
    if (c->detached) {
        conn_free(c);
        return;
    }
    conn_flush(c);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    struct http_conn *c = arg;
    c->writing = 0; /* not persistent */
    if (conn_flush(c) == 0 && c->state == C_IDLE && c->parsed < c->in_len)
        conn_run(c);
}

static void grow_in(struct http_conn *c)
{
    if (c->in_cap - c->in_len >= READ_CHUNK / 2)
        return;
    /* compact: drop what was consumed, but never the head of a request being parsed */
    size_t keep_from = c->state == C_IDLE ? c->parsed : c->req_start;
    if (keep_from > 0 && c->state != C_INFLIGHT) {
        size_t shift = keep_from;
        memmove(c->in, c->in + shift, c->in_len - shift);
        c->in_len -= shift;
        c->parsed -= shift;
        c->req_start -= shift;
        if (c->state == C_BODY)
            c->head_end -= shift;
        for (int i = 0; i < c->nhdrs; i++) {
            c->rb->hdrs[i].name -= shift;
            c->rb->hdrs[i].value -= shift;
        }
        if (c->url_len)
            c->url_off -= shift;
    }
    if (c->in_cap - c->in_len < READ_CHUNK / 2) {
        c->in_cap = c->in_cap * 2;
        c->in = xrealloc(c->in, c->in_cap);
    }
}

#define MAX_UNPARSED (256 * 1024) /* buffered beyond it, stop reading until it is served */

/* Edge-triggered: read until the socket is empty (EAGAIN or a short read), or until there is
 * no room that may be used: a request in flight points into the buffer, so the buffer cannot
 * move then; and a client that floods pipelined requests is read MAX_UNPARSED at a time. */
static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct http_conn *c = arg;
    if (c->state == C_LINGER) {
        char sink[4096];
        for (;;) {
            ssize_t n = recv(fd, sink, sizeof sink, 0);
            if (n > 0) {
                c->srv->st.bytes_in += (uint64_t) n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                conn_free(c);
            return;
        }
    }
    int fatal = 0, got = 0;
    if (what & EV_CLOSED)
        c->rdhup = 1;
    c->read_blocked = 1;
    for (int round = 0; round < 64; round++) {
        size_t room;
        if (c->state == C_INFLIGHT) {
            if (c->in == NULL || c->in_len == c->in_cap)
                break; /* blocked: the buffer may not move now */
        } else {
            if (c->in_len - c->parsed > MAX_UNPARSED)
                break; /* blocked: serve what is here first */
            /* a body already consumed need not stay in the buffer: keep only its head */
            if (c->state == C_BODY && c->parsed == c->in_len && c->head_end > c->req_start)
                c->in_len = c->parsed = c->head_end;
            conn_acquire(c);
            grow_in(c);
        }
        room = c->in_cap - c->in_len;
        ssize_t n = recv(fd, c->in + c->in_len, room, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                c->read_blocked = 0;
            else
                fatal = 1;
            break;
        }
        if (n == 0) {
            c->peer_eof = 1;
            c->read_blocked = 0;
            break;
        }
        c->in_len += (size_t) n;
        c->srv->st.bytes_in += (uint64_t) n;
        got = 1;
        if ((size_t) n < room) {
            c->read_blocked = 0; /* a short read: the socket is empty */
            /* data and FIN that came together make one edge: no event will follow for the
             * FIN, and the next recv() would only return 0 */
            if (c->rdhup)
                c->peer_eof = 1;
            break;
        }
    }
    if (fatal || (c->peer_eof && !got && c->state != C_INFLIGHT && c->parsed == c->in_len &&
                  evbuffer_get_length(c->out) == 0)) {
        if (c->state == C_INFLIGHT) {
            c->dead = 1; /* freed when its request is answered */
            return;
        }
        conn_free(c);
        return;
    }
    if (c->state == C_INFLIGHT)
        return; /* buffered; served after the answer */
    conn_run(c);
}

static void conn_free(struct http_conn *c)
{
    struct http_server *s = c->srv;
    CORE_ASSERT(c->state != C_INFLIGHT || c->req.conn == NULL);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    event_free(c->rev);
    event_free(c->wev);
    event_free(c->timer);
    evbuffer_free(c->out);
    if (c->fd >= 0) {
        close(c->fd);
        ipcap_give(s->o.ipcap, c->remote_ip); /* (a detached socket keeps its place) */
    }
    conn_release(c);
    free(c);
    if (s->draining && s->nconns == 0 && s->listener == NULL)
        log_info("http", "all connections closed");
}

/* a connection the server will not take: 503 in the error shape, then closed */
static void refuse_accept(struct http_server *s, evutil_socket_t fd, const char *message)
{
    char id[40];
    snprintf(id, sizeof id, "%s%llx", s->req_prefix, (unsigned long long) ++s->req_seq);
    send_and_close(s, fd, 503, "overloaded", message, id);
    close(fd);
    s->st.refused++;
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int slen,
                      void *arg)
{
    struct http_server *s = arg;
    if (s->nconns >= s->o.max_connections || s->draining) {
        refuse_accept(s, fd, "too many connections");
        return;
    }
    char ip[46] = "";
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *) (void *) sa)->sin_addr, ip, sizeof ip);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *) (void *) sa)->sin6_addr, ip, sizeof ip);
    if (!ipcap_take(s->o.ipcap, ip)) {
        refuse_accept(s, fd, "too many connections from this address");
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct http_conn *c = xcalloc(1, sizeof *c);
    c->srv = s;
    c->fd = fd;
    snprintf(c->remote_ip, sizeof c->remote_ip, "%s", ip);
    c->out = evbuffer_new();
    c->rev = event_new(s->base, fd, EV_READ | EV_CLOSED | EV_PERSIST | EV_ET, on_read, c);
    c->wev = event_new(s->base, fd, EV_WRITE, on_write, c);
    c->timer = evtimer_new(s->base, on_timeout, c);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    s->st.accepted++;
    c->state = C_IDLE;
    arm_timer(c, s->t_header); /* a new connection must start its request promptly */
    want_read(c, 1);
    (void) slen;
}

static void on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
    struct http_server *s = arg;
    if (s->listener)
        evconnlistener_enable(s->listener);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    struct http_server *s = arg;
    int e = EVUTIL_SOCKET_ERROR();
    log_warn("http", "accept: %s", evutil_socket_error_to_string(e));
    /* out of descriptors: pause accepting briefly rather than spin on the error */
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        struct timeval tv = {0, 100000};
        evconnlistener_disable(l);
        evtimer_add(s->accept_retry, &tv);
    }
}

/* ---- the server ------------------------------------------------------------------------------ */

static int listen_socket(const struct http_opts *o, char *err, size_t cap)
{
    struct addrinfo hints = {0}, *res = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(o->host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, cap, "http: cannot resolve %s: %s", o->host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, cap, "http: socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (o->reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, o->backlog) < 0) {
        snprintf(err, cap, "http: cannot listen on %s:%d: %s", o->host, o->port, strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

static const struct timeval *common_timeout(struct event_base *base, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return event_base_init_common_timeout(base, &tv);
}

struct http_server *http_server_new(struct event_base *base, const struct http_opts *opts,
                                    http_dispatch_cb *cb, void *ud, char *err, size_t cap)
{
    SETTINGS.on_message_begin = cb_message_begin;
    SETTINGS.on_url = cb_url;
    SETTINGS.on_header_field = cb_header_field;
    SETTINGS.on_header_value = cb_header_value;
    SETTINGS.on_headers_complete = cb_headers_complete;
    SETTINGS.on_body = cb_body;
    SETTINGS.on_message_complete = cb_message_complete;

    int fd = listen_socket(opts, err, cap);
    if (fd < 0)
        return NULL;
    struct http_server *s = xcalloc(1, sizeof *s);
    s->base = base;
    s->o = *opts;
    s->host = xstrdup(opts->host);
    s->o.host = s->host;
    s->dispatch = cb;
    s->ud = ud;
    s->listener = evconnlistener_new(base, on_accept, s, LEV_OPT_CLOSE_ON_FREE, -1, fd);
    evconnlistener_set_error_cb(s->listener, on_accept_error);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *) &ss, &sl);
    s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *) &ss)->sin6_port
                                             : ((struct sockaddr_in *) &ss)->sin_port);
    s->t_header = common_timeout(base, opts->header_timeout_ms);
    s->t_body = common_timeout(base, opts->body_timeout_ms);
    s->t_idle = common_timeout(base, opts->idle_timeout_ms);
    s->t_write = common_timeout(base, opts->write_timeout_ms);
    s->t_linger = common_timeout(base, 2000);
    s->accept_retry = evtimer_new(base, on_accept_retry, s);
    unsigned char rnd[3];
    evutil_secure_rng_get_bytes(rnd, sizeof rnd);
    snprintf(s->req_prefix, sizeof s->req_prefix, "r-%02x%02x%02x-", rnd[0], rnd[1], rnd[2]);
    return s;
}

int http_server_port(const struct http_server *s)
{
    return s->port;
}

int http_server_connections(const struct http_server *s)
{
    return s->nconns;
}

void http_server_stats(const struct http_server *s, struct http_stats *out)
{
    *out = s->st;
}

int http_server_inflight(const struct http_server *s)
{
    return s->inflight;
}

void http_server_drain(struct http_server *s)
{
    if (s->draining)
        return;
    s->draining = 1;
    if (s->listener) {
        evconnlistener_free(s->listener);
        s->listener = NULL;
    }
    struct http_conn *c = s->conns, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->state == C_IDLE && evbuffer_get_length(c->out) == 0 && c->parsed == c->in_len)
            conn_free(c);
        else if (c->state == C_IDLE)
            c->close_after = 1; /* an answer is on its way out; close after it */
        /* a request being read or served closes after its answer (see http_respond) */
    }
}

void http_server_free(struct http_server *s)
{
    if (s == NULL)
        return;
    if (s->listener)
        evconnlistener_free(s->listener);
    s->listener = NULL;
    while (s->conns) {
        struct http_conn *c = s->conns;
        if (c->state == C_INFLIGHT && c->req.conn) {
            log_error("http", "request %s still in flight at shutdown", c->request_id);
            c->req.conn = NULL;
            s->inflight--;
        }
        conn_free(c);
    }
    event_free(s->accept_retry);
    while (s->nspare_in)
        free(s->spare_in[--s->nspare_in]);
    while (s->nspare_rb)
        free(s->spare_rb[--s->nspare_rb]);
    free(s->host);
    free(s);
}

void http_server_on_response(struct http_server *s, http_response_cb *cb, void *ud)
{
    s->on_response = cb;
    s->on_response_ud = ud;
}
