/* fuzz_bus.c -- core/bus.c bus_apply: a message off the Redis channel mmo:bus, applied to a
 * world holding players of this node and of others. Redis is ours, but a bus message is bytes
 * another process wrote: it must never crash the node, and whatever it says, the world keeps
 * its promises (every player inside a region; frames well-formed JSON objects). */
#include "bus.h"
#include "world.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct frame {
    size_t len;
    int refs;
    char text[];
};

static void *f_new(const char *text, size_t len, void *ud)
{
    struct frame *f = malloc(sizeof *f + len + 1);
    memcpy(f->text, text, len);
    f->text[len] = '\0';
    f->len = len;
    f->refs = 1;
    (void) ud;
    return f;
}

static void f_unref(void *frame, void *ud)
{
    struct frame *f = frame;
    if (--f->refs == 0)
        free(f);
    (void) ud;
}

/* a frame told to a client: one JSON object, no raw control character inside */
static void f_send(void *conn, void *frame, void *ud)
{
    struct frame *f = frame;
    if (f->len < 2 || f->text[0] != '{' || f->text[f->len - 1] != '}')
        abort();
    for (size_t i = 0; i < f->len; i++)
        if ((unsigned char) f->text[i] < 0x20)
            abort();
    (void) conn, (void) ud;
}

static void f_taken(void *conn, void *ud)
{
    (void) conn, (void) ud;
}

static const struct world_sink SINK = {f_new, f_send, f_unref, f_taken, NULL};

static void check_one(int64_t id, const char *name, double x, double y, void *arg)
{
    (void) id, (void) name;
    if (!(x >= 0 && x < 2000 && y >= 0 && y < 1000))
        abort();
    (void) arg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct world *w = world_new(100, &SINK);
    world_region_add(w, "r1", 0, 0, 1000, 1000);
    world_region_add(w, "r2", 1000, 0, 2000, 1000);
    void *rep;
    world_join(w, (void *) 1, 1, "Aria", 0, "r1", 500, 500, 1.0, &rep);
    world_join(w, (void *) 2, 2, "Bo", 3, "r2", 1500, 500, 1.0, &rep);
    int sync = 0;
    /* twice: the second time everything the first made exists */
    bus_apply(w, "me/1", (const char *) data, size, 2.0, &sync);
    bus_apply(w, "me/1", (const char *) data, size, 3.0, &sync);
    world_each_visible(w, 1, check_one, NULL);
    world_each_visible(w, 2, check_one, NULL);
    world_expire(w, 100.0, 3, 10);
    world_free(w);
    return 0;
}
