/* web.c -- the static files of the web console (/admin/) and the browser client (/play/).
 *
 * At start the files under <root>/admin and <root>/play (http.web_root, "web") are read into
 * memory, once: a request never touches the disk, so it never blocks the event loop, and a
 * path is only ever looked up, never joined to a directory, so no request can name a file
 * outside those two trees ("..", "%2e%2e", "//" and the like simply match nothing). Regular
 * files only: symbolic links, dot files and anything past the limits (WEB_MAX_FILES,
 * WEB_MAX_BYTES) are left out, and said so in the log.
 *
 * A request for "/admin" or "/play" is redirected to the same with a slash; a path ending in
 * "/" is its "index.html". GET and HEAD only (405 otherwise). Every answer carries the
 * console's Content-Security-Policy (no inline script or style, nothing from elsewhere),
 * nosniff, no referrer and no framing; files are "no-cache" with an ETag (the files have no
 * content hash in their names, so a browser asks again and gets 304 when nothing changed).
 * Other paths go to the next dispatcher. */
#include "web.h"

#include "log.h"
#include "mem.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define WEB_MAX_FILES 2048
#define WEB_MAX_BYTES (64u << 20) /* all files together */
#define WEB_MAX_DEPTH 8

#define CSP                                                                                        \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "             \
    "form-action 'self'"

struct web_file {
    char *path; /* as requested: "/admin/app.js" */
    char *body;
    size_t len;
    const char *type;
    char etag[20]; /* "\"<16 hex digits>\"" */
};

struct web {
    struct web_file *files;
    int n, cap;
    size_t bytes;
    http_dispatch_cb *next;
    void *next_ud;
};

static const struct {
    const char *ext, *type;
} TYPES[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".json", "application/json"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".jpg", "image/jpeg"},
    {".ico", "image/x-icon"},
    {".txt", "text/plain; charset=utf-8"},
    {".woff2", "font/woff2"},
    {".map", "application/json"},
};

static const char *type_of(const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++) {
        size_t e = strlen(TYPES[i].ext);
        if (n > e && strcmp(name + n - e, TYPES[i].ext) == 0)
            return TYPES[i].type;
    }
    return "application/octet-stream";
}

/* FNV-1a, 64 bits: an ETag only has to change when the bytes do */
static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char) p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static char *read_all(const char *file, size_t size, size_t *len)
{
    FILE *f = fopen(file, "rb");
    if (f == NULL)
        return NULL;
    char *buf = xmalloc(size ? size : 1);
    size_t got = fread(buf, 1, size, f);
    int bad = ferror(f) || got != size;
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    *len = got;
    return buf;
}

static void add_file(struct web *w, const char *file, const char *url, size_t size)
{
    if (w->n >= WEB_MAX_FILES || w->bytes + size > WEB_MAX_BYTES) {
        log_warn("web", "%s left out: past %d files or %u MiB", file, WEB_MAX_FILES,
                 WEB_MAX_BYTES >> 20);
        return;
    }
    size_t len = 0;
    char *body = read_all(file, size, &len);
    if (body == NULL) {
        log_warn("web", "%s: cannot read: %s", file, strerror(errno));
        return;
    }
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 32;
        w->files = xrealloc(w->files, (size_t) w->cap * sizeof *w->files);
    }
    struct web_file *f = &w->files[w->n++];
    f->path = xstrdup(url);
    f->body = body;
    f->len = len;
    f->type = type_of(url);
    snprintf(f->etag, sizeof f->etag, "\"%016llx\"", (unsigned long long) fnv1a(body, len));
    w->bytes += len;
}

/* Every regular file under dir (depth at most WEB_MAX_DEPTH), served at url + its path. */
static void add_tree(struct web *w, const char *dir, const char *url, int depth)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        if (depth == 0)
            log_info("web", "%s: %s (nothing served under %s/)", dir, strerror(errno), url);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue; /* ".", "..", and dot files (.gitignore, editors' swap files) */
        char file[4096], sub[1024];
        struct stat st;
        if ((size_t) snprintf(file, sizeof file, "%s/%s", dir, de->d_name) >= sizeof file ||
            (size_t) snprintf(sub, sizeof sub, "%s/%s", url, de->d_name) >= sizeof sub)
            continue;
        if (lstat(file, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth < WEB_MAX_DEPTH)
            add_tree(w, file, sub, depth + 1);
        else if (S_ISREG(st.st_mode))
            add_file(w, file, sub, (size_t) st.st_size);
        else if (S_ISLNK(st.st_mode))
            log_warn("web", "%s left out: a symbolic link", file);
    }
    closedir(d);
}

struct web *web_new(const char *root, http_dispatch_cb *next, void *next_ud)
{
    struct web *w = xcalloc(1, sizeof *w);
    w->next = next;
    w->next_ud = next_ud;
    static const char *const TREES[] = {"admin", "play"};
    for (size_t i = 0; i < sizeof TREES / sizeof TREES[0]; i++) {
        char dir[4096], url[64];
        snprintf(dir, sizeof dir, "%s/%s", root, TREES[i]);
        snprintf(url, sizeof url, "/%s", TREES[i]);
        add_tree(w, dir, url, 0);
    }
    log_info("web", "%d files (%zu bytes) from %s", w->n, w->bytes, root);
    return w;
}

void web_free(struct web *w)
{
    if (w == NULL)
        return;
    for (int i = 0; i < w->n; i++) {
        free(w->files[i].path);
        free(w->files[i].body);
    }
    free(w->files);
    free(w);
}

int web_files(const struct web *w)
{
    return w->n;
}

static const struct web_file *find(const struct web *w, const char *path, size_t len)
{
    for (int i = 0; i < w->n; i++)
        if (strlen(w->files[i].path) == len && memcmp(w->files[i].path, path, len) == 0)
            return &w->files[i];
    return NULL;
}

/* Which tree path is in: "/admin" or "/play" (or NULL); *bare: it is the tree's name alone */
static const char *tree_of(const struct http_req *req, int *bare)
{
    static const char *const TREES[] = {"/admin", "/play"};
    for (size_t i = 0; i < sizeof TREES / sizeof TREES[0]; i++) {
        size_t n = strlen(TREES[i]);
        if (req->path_len >= n && memcmp(req->path, TREES[i], n) == 0 &&
            (req->path_len == n || req->path[n] == '/')) {
            *bare = req->path_len == n;
            return TREES[i];
        }
    }
    return NULL;
}

static size_t headers(char *out, size_t cap, const struct web_file *f, const char *location)
{
    int n =
        snprintf(out, cap,
                 "Content-Security-Policy: " CSP "\r\n"
                 "X-Content-Type-Options: nosniff\r\n"
                 "Referrer-Policy: no-referrer\r\n"
                 "X-Frame-Options: DENY\r\n"
                 "%s%s%s"
                 "%s%s%s",
                 f ? "Cache-Control: no-cache\r\nETag: " : "", f ? f->etag : "", f ? "\r\n" : "",
                 location ? "Location: " : "", location ? location : "", location ? "\r\n" : "");
    return n > 0 && (size_t) n < cap ? (size_t) n : 0;
}

void web_dispatch(struct http_req *req, void *ud)
{
    struct web *w = ud;
    int bare = 0;
    const char *tree = tree_of(req, &bare);
    if (tree == NULL) {
        w->next(req, w->next_ud);
        return;
    }
    req->route = strcmp(tree, "/admin") == 0 ? "GET /admin/*" : "GET /play/*";
    char extra[512];
    int get = req->method_len == 3 && memcmp(req->method, "GET", 3) == 0;
    int head = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
    if (!get && !head) {
        char body[256];
        size_t bn = http_error_body(body, sizeof body, "method_not_allowed",
                                    "method not allowed on this route", req->request_id);
        size_t en = headers(extra, sizeof extra, NULL, NULL);
        memcpy(extra + en, "Allow: GET, HEAD\r\n", 18);
        http_respond(req, 405, "application/json", body, bn, extra, en + 18);
        return;
    }
    if (bare) {
        char location[16];
        snprintf(location, sizeof location, "%s/", tree);
        size_t en = headers(extra, sizeof extra, NULL, location);
        http_respond(req, 301, "text/plain; charset=utf-8", "", 0, extra, en);
        return;
    }
    char path[1024];
    size_t len = req->path_len;
    if (len + sizeof "index.html" > sizeof path) {
        http_respond_error(req, 404, "not_found", "no such file");
        return;
    }
    memcpy(path, req->path, len);
    if (path[len - 1] == '/') {
        memcpy(path + len, "index.html", 10);
        len += 10;
    }
    const struct web_file *f = find(w, path, len);
    if (f == NULL) {
        http_respond_error(req, 404, "not_found", "no such file");
        return;
    }
    size_t en = headers(extra, sizeof extra, f, NULL);
    size_t inm_len = 0;
    const char *inm = http_req_header(req, "if-none-match", &inm_len);
    if (inm && inm_len == strlen(f->etag) && memcmp(inm, f->etag, inm_len) == 0) {
        req->head_only = 1; /* 304: the headers of the file, no body */
        http_respond(req, 304, f->type, f->body, f->len, extra, en);
        return;
    }
    http_respond(req, 200, f->type, f->body, f->len, extra, en);
}
