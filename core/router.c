/* router.c -- a segment trie for HTTP routes. */
#include "router.h"
#include "err.h"
#include "mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *METHODS[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
#define NMETHODS 7

struct node {
    char *seg; /* literal segment (NULL for the param child) */
    size_t seg_len;
    char *param; /* name of the param child */
    struct node **kids;
    int nkids;
    struct node *param_kid;
    int ids[NMETHODS]; /* route id per method, -1 when none */
};

struct router {
    struct node *root;
    int count;
};

static struct node *node_new(void)
{
    struct node *n = xcalloc(1, sizeof *n);
    for (int i = 0; i < NMETHODS; i++)
        n->ids[i] = -1;
    return n;
}

static void node_free(struct node *n)
{
    if (n == NULL)
        return;
    for (int i = 0; i < n->nkids; i++)
        node_free(n->kids[i]);
    node_free(n->param_kid);
    free(n->kids);
    free(n->seg);
    free(n->param);
    free(n);
}

static int method_index(const char *m, size_t len)
{
    for (int i = 0; i < NMETHODS; i++)
        if (strlen(METHODS[i]) == len && memcmp(METHODS[i], m, len) == 0)
            return i;
    return -1;
}

struct router *router_new(void)
{
    struct router *r = xcalloc(1, sizeof *r);
    r->root = node_new();
    return r;
}

void router_free(struct router *r)
{
    if (r == NULL)
        return;
    node_free(r->root);
    free(r);
}

int router_count(const struct router *r)
{
    return r->count;
}

static int valid_seg_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("-._~!$&'()*+,;=@%", c) != NULL;
}

int router_add(struct router *r, const char *method, const char *pattern, int route_id,
               const char **why)
{
    int mi = method_index(method, strlen(method));
    if (mi < 0) {
        *why = "unknown method";
        return -1;
    }
    if (pattern[0] != '/') {
        *why = "path must start with /";
        return -1;
    }
    struct node *n = r->root;
    int nparams = 0;
    const char *p = pattern + 1;
    while (*p) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t) (end - p) : strlen(p);
        if (len == 0) {
            *why = "empty path segment";
            return -1;
        }
        if (p[0] == ':') {
            if (len == 1) {
                *why = "parameter without a name";
                return -1;
            }
            if (++nparams > ROUTER_MAX_PARAMS) {
                *why = "too many parameters";
                return -1;
            }
            if (n->param_kid == NULL) {
                n->param_kid = node_new();
                n->param_kid->param = xstrndup(p + 1, len - 1);
            } else if (strlen(n->param_kid->param) != len - 1 ||
                       memcmp(n->param_kid->param, p + 1, len - 1) != 0) {
                *why = "parameter name differs from another route at the same place";
                return -1;
            }
            n = n->param_kid;
        } else {
            for (size_t i = 0; i < len; i++)
                if (!valid_seg_char(p[i])) {
                    *why = "invalid character in path";
                    return -1;
                }
            struct node *kid = NULL;
            for (int i = 0; i < n->nkids; i++)
                if (n->kids[i]->seg_len == len && memcmp(n->kids[i]->seg, p, len) == 0)
                    kid = n->kids[i];
            if (kid == NULL) {
                kid = node_new();
                kid->seg = xstrndup(p, len);
                kid->seg_len = len;
                n->kids = xrealloc(n->kids, sizeof *n->kids * (size_t) (n->nkids + 1));
                n->kids[n->nkids++] = kid;
            }
            n = kid;
        }
        p += len;
        if (*p == '/') {
            p++;
            if (*p == '\0') {
                *why = "trailing slash";
                return -1;
            }
        }
    }
    if (n->ids[mi] >= 0) {
        *why = "duplicate route";
        return -1;
    }
    n->ids[mi] = route_id;
    r->count++;
    return 0;
}

/* Find the node for path[0..len) (which starts after a '/'); fills params. */
static const struct node *walk(const struct node *n, const char *p, size_t len,
                               struct router_match *m)
{
    if (len == 0)
        return n;
    const char *slash = memchr(p, '/', len);
    size_t seg = slash ? (size_t) (slash - p) : len;
    if (seg == 0)
        return NULL;
    size_t rest_off = slash ? seg + 1 : seg;
    if (slash && rest_off == len)
        return NULL; /* trailing slash */
    for (int i = 0; i < n->nkids; i++) {
        const struct node *k = n->kids[i];
        if (k->seg_len == seg && memcmp(k->seg, p, seg) == 0) {
            const struct node *found = walk(k, p + rest_off, len - rest_off, m);
            if (found)
                return found;
        }
    }
    if (n->param_kid && m->nparams < ROUTER_MAX_PARAMS) {
        int saved = m->nparams;
        m->params[m->nparams].name = n->param_kid->param;
        m->params[m->nparams].value = p;
        m->params[m->nparams].len = seg;
        m->nparams++;
        const struct node *found = walk(n->param_kid, p + rest_off, len - rest_off, m);
        if (found)
            return found;
        m->nparams = saved;
    }
    return NULL;
}

static int has_any(const struct node *n)
{
    for (int i = 0; i < NMETHODS; i++)
        if (n->ids[i] >= 0)
            return 1;
    return 0;
}

int router_match(const struct router *r, const char *method, size_t method_len, const char *path,
                 size_t len, struct router_match *m)
{
    m->nparams = 0;
    m->route_id = -1;
    if (len == 0 || path[0] != '/')
        return ERR_NOTFOUND;
    const struct node *n = walk(r->root, path + 1, len - 1, m);
    if (n == NULL || !has_any(n))
        return ERR_NOTFOUND;
    int mi = method_index(method, method_len);
    if (mi == 1 && n->ids[1] < 0)
        mi = 0; /* HEAD served by GET */
    if (mi < 0 || n->ids[mi] < 0)
        return ROUTER_NOMETHOD;
    m->route_id = n->ids[mi];
    return 0;
}

size_t router_allow(const struct router *r, const char *path, size_t len, char *buf, size_t cap)
{
    struct router_match m = {0};
    size_t o = 0;
    if (cap)
        buf[0] = '\0';
    if (len == 0 || path[0] != '/')
        return 0;
    const struct node *n = walk(r->root, path + 1, len - 1, &m);
    if (n == NULL)
        return 0;
    for (int i = 0; i < NMETHODS; i++) {
        if (n->ids[i] < 0 && !(i == 1 && n->ids[0] >= 0))
            continue;
        int w = snprintf(buf + o, cap - o, "%s%s", o ? ", " : "", METHODS[i]);
        if (w < 0 || (size_t) w >= cap - o)
            break;
        o += (size_t) w;
    }
    return o;
}
