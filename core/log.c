/* log.c -- JSON lines on stdout, one write() per line. */
#include "log.h"
#include "mem.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int log__level = LOG_INFO;

static struct {
    char *node;
    int fd;
} G = {NULL, 1};

static const char *NAMES[] = {"debug", "info", "warn", "error", "off"};

void log_init(const char *node_id, int level)
{
    free(G.node);
    G.node = xstrdup(node_id ? node_id : "node");
    log__level = level;
}

void log_deinit(void)
{
    free(G.node);
    G.node = NULL;
}

void log_set_level(int level)
{
    if (level >= LOG_DEBUG && level <= LOG_OFF)
        log__level = level;
}

void log_set_fd(int fd)
{
    G.fd = fd;
}

int log_level_parse(const char *name)
{
    for (int i = 0; i <= LOG_OFF; i++)
        if (name && strcmp(name, NAMES[i]) == 0)
            return i;
    return -1;
}

const char *log_level_name(int level)
{
    return (level >= 0 && level <= LOG_OFF) ? NAMES[level] : "?";
}

size_t log_json_escape(char *out, size_t cap, const char *s, size_t len)
{
    static const char HEX[] = "0123456789abcdef";
    size_t o = 0;
    if (cap == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) s[i];
        char esc = 0;
        switch (c) {
        case '"': esc = '"'; break;
        case '\\': esc = '\\'; break;
        case '\n': esc = 'n'; break;
        case '\r': esc = 'r'; break;
        case '\t': esc = 't'; break;
        default: break;
        }
        if (esc) {
            if (o + 2 >= cap)
                break;
            out[o++] = '\\';
            out[o++] = esc;
        } else if (c < 0x20 || c == 0x7f) {
            if (o + 6 >= cap)
                break;
            out[o++] = '\\';
            out[o++] = 'u';
            out[o++] = '0';
            out[o++] = '0';
            out[o++] = HEX[c >> 4];
            out[o++] = HEX[c & 15];
        } else {
            if (o + 1 >= cap)
                break;
            out[o++] = (char) c;
        }
    }
    out[o] = '\0';
    return o;
}

void log_write(int level, const char *tag, const char *request_id, const char *fields,
               const char *fmt, ...)
{
    char msg[2048];
    char line[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t) n >= sizeof msg)
        n = sizeof msg - 1;

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);

    size_t o = (size_t) snprintf(line, sizeof line,
                                 "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"level\":\"%s\","
                                 "\"node\":\"%s\",\"tag\":\"%s\",\"msg\":\"",
                                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                                 tm.tm_min, tm.tm_sec, (int) (tv.tv_usec / 1000),
                                 log_level_name(level), G.node ? G.node : "node", tag ? tag : "");
    /* the reserve keeps room for the closing part and the fields */
    size_t reserve = 64 + (request_id ? strlen(request_id) + 20 : 0);
    size_t room = sizeof line - o > reserve ? sizeof line - o - reserve : 1;
    o += log_json_escape(line + o, room, msg, (size_t) n);
    o += (size_t) snprintf(line + o, sizeof line - o, "\"");
    if (request_id && o < sizeof line)
        o += (size_t) snprintf(line + o, sizeof line - o, ",\"request_id\":\"%s\"", request_id);
    if (fields && *fields && o < sizeof line) {
        size_t fl = strlen(fields);
        if (o + fl + 4 < sizeof line) {
            line[o++] = ',';
            memcpy(line + o, fields, fl);
            o += fl;
        } else {
            o += (size_t) snprintf(line + o, sizeof line - o, ",\"fields_truncated\":true");
        }
    }
    if (o > sizeof line - 3)
        o = sizeof line - 3;
    line[o++] = '}';
    line[o++] = '\n';

    /* stdout is a pipe or a terminal; a short write is retried, an error dropped */
    size_t off = 0;
    while (off < o) {
        ssize_t w = write(G.fd, line + off, o - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t) w;
    }
}
