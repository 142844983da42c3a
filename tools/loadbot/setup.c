/* setup.c -- what loadbot does before its loop runs: blocking HTTP (login, POST /api/admin/bots)
 * and a small JSON scanner, enough for the node's answers and messages. */
#include "loadbot.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- JSON scanning -------------------------------------------------------------------------- */

static const char *ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

const char *json_skip(const char *p, const char *end)
{
    p = ws(p, end);
    if (p >= end)
        return NULL;
    if (*p == '"')
        return skip_string(p, end);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        for (; p < end; p++) {
            if (*p == '"') {
                p = skip_string(p, end);
                if (!p)
                    return NULL;
                p--;
            } else if (*p == '{' || *p == '[') {
                depth++;
            } else if (*p == '}' || *p == ']') {
                if (--depth == 0)
                    return p + 1;
            }
        }
        return NULL;
    }
    /* number, true, false, null */
    const char *s = p;
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' &&
           *p != '\r' && *p != '\t')
        p++;
    return p > s ? p : NULL;
}

int json_next(const char **pp, const char *end, const char **k, size_t *klen, const char **v,
              const char **vend)
{
    const char *p = ws(*pp, end);
    if (p >= end)
        return -1;
    if (*p == '}') {
        *pp = p + 1;
        return 0;
    }
    if (*p != '{' && *p != ',')
        return -1;
    p = ws(p + 1, end);
    if (p < end && *p == '}') {
        *pp = p + 1;
        return 0;
    }
    if (p >= end || *p != '"')
        return -1;
    const char *ke = skip_string(p, end);
    if (!ke)
        return -1;
    *k = p + 1;
    *klen = (size_t) (ke - p - 2);
    p = ws(ke, end);
    if (p >= end || *p != ':')
        return -1;
    p = ws(p + 1, end);
    const char *ve = json_skip(p, end);
    if (!ve)
        return -1;
    *v = p;
    *vend = ve;
    p = ws(ve, end);
    if (p >= end || (*p != ',' && *p != '}'))
        return -1;
    *pp = p; /* at ',' or '}': the next call goes on, or returns 0 */
    return 1;
}

int json_num(const char *v, const char *vend, double *out)
{
    char buf[64];
    size_t n = (size_t) (vend - v);
    if (n == 0 || n >= sizeof buf || !(*v == '-' || (*v >= '0' && *v <= '9')))
        return 0;
    memcpy(buf, v, n);
    buf[n] = 0;
    char *e;
    *out = strtod(buf, &e);
    return *e == 0;
}

static int key_is(const char *k, size_t klen, const char *name)
{
    return strlen(name) == klen && memcmp(k, name, klen) == 0;
}

/* ---- blocking HTTP -------------------------------------------------------------------------- */

static int wait_fd(int fd, short what, uint64_t deadline)
{
    for (;;) {
        uint64_t now = now_us();
        if (now >= deadline)
            return -1;
        struct pollfd pfd = {.fd = fd, .events = what};
        int r = poll(&pfd, 1, (int) ((deadline - now) / 1000 + 1));
        if (r > 0)
            return 0;
        if (lb_setup_signal || (r < 0 && errno != EINTR))
            return -1;
    }
}

/* Decode a chunked body in place; returns its length or -1. */
static long dechunk(char *b, size_t len)
{
    char *r = b, *w = b, *end = b + len;
    for (;;) {
        char *e;
        unsigned long n = strtoul(r, &e, 16);
        if (e == r)
            return -1;
        char *lf = memchr(e, '\n', (size_t) (end - e));
        if (!lf)
            return -1;
        r = lf + 1;
        if (n == 0)
            return w - b;
        if ((size_t) (end - r) < n + 2)
            return -1;
        memmove(w, r, n);
        w += n;
        r += n + 2;
    }
}

int http_call(const struct lb_opts *o, const char *method, const char *path, const char *auth,
              const char *body, double timeout_s, int *status, char **resp)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(o->host, o->port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "loadbot: %s: %s\n", o->host, gai_strerror(rc));
        return -1;
    }
    uint64_t deadline = now_us() + (uint64_t) (timeout_s * 1e6);
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS)) {
        fprintf(stderr, "loadbot: connect %s:%s: %s\n", o->host, o->port, strerror(errno));
        freeaddrinfo(ai);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    freeaddrinfo(ai);
    int err = 0;
    socklen_t el = sizeof err;
    if (wait_fd(fd, POLLOUT, deadline) < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 ||
        err) {
        if (!lb_setup_signal)
            fprintf(stderr, "loadbot: connect %s:%s: %s\n", o->host, o->port,
                    err ? strerror(err) : "timeout");
        close(fd);
        return -1;
    }
    size_t blen = body ? strlen(body) : 0;
    size_t cap = 512 + strlen(path) + (auth ? strlen(auth) : 0) + blen;
    char *req = malloc(cap);
    if (!req)
        abort();
    int n = snprintf(
        req, cap,
        "%s %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: loadbot\r\n"
        "Accept: application/json\r\nConnection: close\r\n%s%s%s"
        "%s%zu\r\n\r\n",
        method, path, o->host, o->port, auth ? "Authorization: Bearer " : "", auth ? auth : "",
        auth ? "\r\n" : "",
        body ? "Content-Type: application/json\r\nContent-Length: " : "Content-Length: ", blen);
    size_t total = (size_t) n + blen, off = 0;
    if (body)
        memcpy(req + n, body, blen);
    while (off < total) {
        ssize_t w = send(fd, req + off, total - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t) w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(fd, POLLOUT, deadline) < 0)
                break;
        } else {
            break;
        }
    }
    free(req);
    if (off < total) {
        if (!lb_setup_signal)
            fprintf(stderr, "loadbot: %s %s: could not send the request\n", method, path);
        close(fd);
        return -1;
    }
    size_t rcap = 65536, rlen = 0;
    char *r = malloc(rcap);
    if (!r)
        abort();
    for (;;) {
        if (rlen + 1 >= rcap) {
            rcap *= 2;
            r = realloc(r, rcap);
            if (!r)
                abort();
        }
        ssize_t got = recv(fd, r + rlen, rcap - rlen - 1, 0);
        if (got > 0) {
            rlen += (size_t) got;
        } else if (got == 0) {
            break;
        } else if (errno == EAGAIN || errno == EINTR) {
            if (wait_fd(fd, POLLIN, deadline) < 0) {
                if (!lb_setup_signal)
                    fprintf(stderr, "loadbot: %s %s: no complete answer within %.0f s\n", method,
                            path, timeout_s);
                free(r);
                close(fd);
                return -1;
            }
        } else {
            fprintf(stderr, "loadbot: %s %s: %s\n", method, path, strerror(errno));
            free(r);
            close(fd);
            return -1;
        }
    }
    close(fd);
    r[rlen] = 0;
    char *hend = strstr(r, "\r\n\r\n");
    if (strncmp(r, "HTTP/1.", 7) != 0 || !hend) {
        fprintf(stderr, "loadbot: %s %s: not an HTTP answer\n", method, path);
        free(r);
        return -1;
    }
    *status = atoi(r + 9);
    *hend = 0;
    int chunked = 0;
    for (char *h = strstr(r, "\r\n"); h; h = strstr(h + 2, "\r\n"))
        if (strncasecmp(h + 2, "transfer-encoding:", 18) == 0 && strstr(h + 20, "chunked"))
            chunked = 1;
    char *b = hend + 4;
    size_t bl = rlen - (size_t) (b - r);
    if (chunked) {
        long d = dechunk(b, bl);
        if (d < 0) {
            fprintf(stderr, "loadbot: %s %s: bad chunked body\n", method, path);
            free(r);
            return -1;
        }
        bl = (size_t) d;
    }
    memmove(r, b, bl);
    r[bl] = 0;
    *resp = r;
    return 0;
}

/* ---- the bots ------------------------------------------------------------------------------- */

/* A JSON string value (no escapes expected: tokens, codes) into a malloc'd C string. */
static char *str_dup(const char *v, const char *vend)
{
    if (vend - v < 2 || *v != '"')
        return NULL;
    size_t n = (size_t) (vend - v - 2);
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, v + 1, n);
    s[n] = 0;
    return s;
}

static void json_escape(char *out, size_t cap, const char *in)
{
    size_t o = 0;
    for (; *in && o + 7 < cap; in++) {
        unsigned char ch = (unsigned char) *in;
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char) ch;
        } else if (ch < 0x20) {
            o += (size_t) snprintf(out + o, cap - o, "\\u%04x", ch);
        } else {
            out[o++] = (char) ch;
        }
    }
    out[o] = 0;
}

/* An error answer, shortened, for a message. */
static void print_answer(const char *what, int status, const char *body)
{
    fprintf(stderr, "loadbot: %s: HTTP %d: %.300s\n", what, status, body);
}

/* The answer of POST /api/admin/bots: asked of the node, or read from --bots-file. malloc'd,
 * NUL-terminated; NULL on failure (said on stderr). */
static char *bots_answer(const struct lb_opts *o)
{
    if (o->bots_file) {
        FILE *f = fopen(o->bots_file, "r");
        if (!f) {
            fprintf(stderr, "loadbot: --bots-file %s: %s\n", o->bots_file, strerror(errno));
            return NULL;
        }
        size_t cap = 1 << 20, len = 0, n;
        char *text = malloc(cap);
        if (!text)
            abort();
        while ((n = fread(text + len, 1, cap - len - 1, f)) > 0) {
            len += n;
            if (len + 1 == cap) {
                cap *= 2;
                text = realloc(text, cap);
                if (!text)
                    abort();
            }
        }
        fclose(f);
        text[len] = 0;
        return text;
    }
    if (!o->admin_password || !*o->admin_password) {
        fprintf(stderr, "loadbot: no admin password: --admin-password or MMO_ADMIN_PASSWORD\n");
        return NULL;
    }
    char pw[512], body[1024];
    json_escape(pw, sizeof pw, o->admin_password);
    snprintf(body, sizeof body, "{\"username\":\"admin\",\"password\":\"%s\"}", pw);
    int status;
    char *resp;
    if (http_call(o, "POST", "/api/auth/login", NULL, body, 30, &status, &resp) < 0)
        return NULL;
    if (status != 200) {
        print_answer("POST /api/auth/login (admin)", status, resp);
        free(resp);
        return NULL;
    }
    char *token = NULL;
    const char *p = resp, *end = resp + strlen(resp), *k, *v, *ve;
    size_t kl;
    while (json_next(&p, end, &k, &kl, &v, &ve) == 1)
        if (key_is(k, kl, "access_token"))
            token = str_dup(v, ve);
    free(resp);
    if (!token) {
        fprintf(stderr, "loadbot: POST /api/auth/login: no access_token in the answer\n");
        return NULL;
    }
    snprintf(body, sizeof body,
             "{\"count\":%d,\"region\":\"%s\",\"spread\":%.17g,\"prefix\":\"%s\"}", o->bots,
             o->region, o->spread, o->prefix);
    int rc = http_call(o, "POST", "/api/admin/bots", token, body, 300, &status, &resp);
    free(token);
    if (rc < 0)
        return NULL;
    if (status != 200) {
        print_answer("POST /api/admin/bots", status, resp);
        free(resp);
        return NULL;
    }
    return resp;
}

int setup_bots(struct lb *lb)
{
    const struct lb_opts *o = &lb->o;
    const char *what = o->bots_file ? o->bots_file : "POST /api/admin/bots";
    uint64_t t = now_us();
    char *resp = bots_answer(o);
    if (!resp)
        return -1;
    const char *p, *end, *k, *v, *ve;
    size_t kl;
    /* {"bots":[{account_id, player_id, token, region, x, y}, ...]} */
    lb->bots = calloc((size_t) o->bots, sizeof *lb->bots);
    if (!lb->bots)
        abort();
    int n = 0;
    p = resp;
    end = resp + strlen(resp);
    const char *arr = NULL, *arr_end = NULL;
    while (json_next(&p, end, &k, &kl, &v, &ve) == 1)
        if (key_is(k, kl, "bots") && *v == '[') {
            arr = v + 1;
            arr_end = ve - 1;
        }
    for (const char *q = arr; q && q < arr_end;) {
        while (q < arr_end && (*q == ' ' || *q == ',' || *q == '\n' || *q == '\r'))
            q++;
        if (q >= arr_end || *q != '{')
            break;
        const char *oe = json_skip(q, arr_end + 1);
        if (!oe || n == o->bots)
            break;
        struct bot *b = &lb->bots[n];
        double id = 0;
        int have_x = 0, have_y = 0;
        const char *op = q;
        while (json_next(&op, oe, &k, &kl, &v, &ve) == 1) {
            if (key_is(k, kl, "player_id"))
                json_num(v, ve, &id);
            else if (key_is(k, kl, "token"))
                b->token = str_dup(v, ve);
            else if (key_is(k, kl, "x"))
                have_x = json_num(v, ve, &b->x);
            else if (key_is(k, kl, "y"))
                have_y = json_num(v, ve, &b->y);
        }
        b->id = (int64_t) id;
        if (b->id <= 0 || !b->token || !have_x || !have_y) {
            fprintf(stderr, "loadbot: %s: bot %d is incomplete\n", what, n + 1);
            free(resp);
            return -1;
        }
        n++;
        q = oe;
    }
    free(resp);
    if (n != o->bots) {
        fprintf(stderr, "loadbot: %s: %d bots in the answer, %d asked\n", what, n, o->bots);
        return -1;
    }
    lb->nbots = n;
    /* they walk in the box their start positions span (inside the region and the spread) */
    lb->bx0 = lb->by0 = INFINITY;
    lb->bx1 = lb->by1 = -INFINITY;
    for (int i = 0; i < n; i++) {
        struct bot *b = &lb->bots[i];
        lb->bx0 = fmin(lb->bx0, b->x);
        lb->by0 = fmin(lb->by0, b->y);
        lb->bx1 = fmax(lb->bx1, b->x);
        lb->by1 = fmax(lb->by1, b->y);
    }
    /* a box of one point (one bot, or bots all placed on one spot) would keep them standing:
     * at least 40 steps across, around its middle */
    double least = 40 * o->step;
    if (lb->bx1 - lb->bx0 < least) {
        double c = (lb->bx0 + lb->bx1) / 2;
        lb->bx0 = c - least / 2;
        lb->bx1 = c + least / 2;
    }
    if (lb->by1 - lb->by0 < least) {
        double c = (lb->by0 + lb->by1) / 2;
        lb->by0 = c - least / 2;
        lb->by1 = c + least / 2;
    }
    if (!o->quiet)
        fprintf(stderr,
                "loadbot: %d bots from %s in %.1f s (walking in [%.0f, %.0f] x [%.0f, %.0f])\n", n,
                what, (double) (now_us() - t) / 1e6, lb->bx0, lb->bx1, lb->by0, lb->by1);
    return 0;
}

void setup_peer_bots(struct lb *lb)
{
    const struct lb_opts *o = &lb->o;
    lb->bots = calloc((size_t) o->bots, sizeof *lb->bots);
    if (!lb->bots)
        abort();
    /* the peer's world is one square, [0, 1000) on both axes; bots around its centre */
    double half = fmin(o->spread, 998) / 2;
    lb->bx0 = lb->by0 = 500 - half;
    lb->bx1 = lb->by1 = 500 + half;
    for (int i = 0; i < o->bots; i++) {
        struct bot *b = &lb->bots[i];
        b->id = i + 1;
        b->x = lb->bx0 + lb_rand(lb) * (lb->bx1 - lb->bx0);
        b->y = lb->by0 + lb_rand(lb) * (lb->by1 - lb->by0);
    }
    lb->nbots = o->bots;
}
