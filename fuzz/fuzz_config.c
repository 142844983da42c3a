/* fuzz_config.c -- core/conf.c: config.lua's text through conf_load_text, as `mmo serve` reads
 * its config file (a Lua VM with no libraries, a memory cap and an instruction budget), then
 * the checks of every section, key, shard and rate class.
 *
 * Input: the text of config.lua. Checks: a refusal has a one-line message; an accepted config
 * reads the same twice (conf_dump's text is equal), its shards have regions and conninfo, its
 * rate classes names and its Redis instances a name (not home's) and every field. The
 * environment's MMO_* variables are cleared once at start, so only the input decides. */
#include "conf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h> /* memfd_create: _GNU_SOURCE comes from CMakeLists.txt */
#include <unistd.h>

extern char **environ;

static int memfd = -1;

static void setup(void)
{
    /* unset every MMO_* variable (unsetenv changes environ: start over after each) */
    for (int again = 1; again;) {
        again = 0;
        for (char **e = environ; *e; e++) {
            if (strncmp(*e, "MMO_", 4) == 0) {
                char name[256];
                size_t n = strcspn(*e, "=");
                if (n >= sizeof name)
                    abort();
                memcpy(name, *e, n);
                name[n] = '\0';
                unsetenv(name);
                again = 1;
                break;
            }
        }
    }
    memfd = memfd_create("conf_dump", 0);
    if (memfd < 0)
        abort();
}

/* conf_dump's text of c, in buf (at most cap - 1 bytes, terminated); its length */
static size_t dump(const struct conf *c, char *buf, size_t cap)
{
    if (ftruncate(memfd, 0) != 0 || lseek(memfd, 0, SEEK_SET) != 0)
        abort();
    conf_dump(c, memfd);
    ssize_t n = pread(memfd, buf, cap - 1, 0);
    if (n < 0)
        abort();
    buf[n] = '\0';
    return (size_t) n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (memfd < 0)
        setup();
    /* a copy of exactly the right size, so ASan sees any read past the end */
    char *text = malloc(size ? size : 1);
    memcpy(text, data, size);
    struct conf c;
    char err[512];
    err[0] = '\0';
    int rc = conf_load_text(&c, "config.lua", text, size, err, sizeof err);
    if (rc == 0) {
        static char a[1 << 16], b[1 << 16];
        for (int i = 0; i < c.nshards; i++)
            if (c.shards[i].regions == NULL || c.shards[i].conninfo == NULL)
                abort();
        for (int i = 0; i < c.nrate; i++)
            if (c.rate[i].name == NULL || c.rate[i].name[0] == '\0')
                abort();
        if (c.nredis_instances < 0 || c.nredis_instances >= CONF_MAX_REDIS)
            abort();
        for (int i = 0; i < c.nredis_instances; i++) {
            const struct conf_redis_instance *ri = &c.redis_instances[i];
            if (ri->name == NULL || ri->name[0] == '\0' || ri->host == NULL ||
                ri->sentinels == NULL || ri->master_name == NULL ||
                strcmp(ri->name, c.redis_name) == 0)
                abort();
        }
        size_t na = dump(&c, a, sizeof a);
        conf_free(&c);
        if (conf_load_text(&c, "config.lua", text, size, err, sizeof err) != 0)
            abort(); /* accepted once, refused the second time */
        size_t nb = dump(&c, b, sizeof b);
        if (na != nb || memcmp(a, b, na) != 0)
            abort();
    } else if (rc != -1 || err[0] == '\0' || strlen(err) >= sizeof err) {
        abort();
    }
    conf_free(&c);
    free(text);
    return 0;
}
