/* log.h -- structured logs: one JSON object per line on stdout.
 *
 * Every line has ts, level, node, tag and msg; request_id and free-form fields when given.
 * The macros test the level before formatting anything. */
#ifndef CORE_LOG_H
#define CORE_LOG_H

#include <stddef.h>

enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF };

extern int log__level;

/* Set the node id printed on every line (copied) and the minimum level. */
void log_init(const char *node_id, int level);
void log_deinit(void);
void log_set_level(int level);
/* "debug" | "info" | "warn" | "error" | "off" -> LOG_*; -1 when unknown. */
int log_level_parse(const char *name);
const char *log_level_name(int level);
/* Send lines to fd instead of stdout (tests). */
void log_set_fd(int fd);

/* Write one line. request_id may be NULL. fields is a JSON object body without braces
 * (`"k":1,"s":"x"`), already escaped, or NULL. Borrowed: nothing is kept. */
void log_write(int level, const char *tag, const char *request_id, const char *fields,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Append s (len bytes) to out as the body of a JSON string, escaped; returns bytes written,
 * at most cap-1 (always NUL-terminated). */
size_t log_json_escape(char *out, size_t cap, const char *s, size_t len);

#define LOG__AT(lv, tag, ...)                                                                      \
    do {                                                                                           \
        if (log__level <= (lv))                                                                    \
            log_write((lv), (tag), NULL, NULL, __VA_ARGS__);                                       \
    } while (0)
#define log_debug(tag, ...) LOG__AT(LOG_DEBUG, tag, __VA_ARGS__)
#define log_info(tag, ...)  LOG__AT(LOG_INFO, tag, __VA_ARGS__)
#define log_warn(tag, ...)  LOG__AT(LOG_WARN, tag, __VA_ARGS__)
#define log_error(tag, ...) LOG__AT(LOG_ERROR, tag, __VA_ARGS__)

#endif
