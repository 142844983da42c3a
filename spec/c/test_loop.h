/* test_loop.h -- running a libevent loop in the C tests that talk to real servers (PostgreSQL,
 * Redis, sentinels): until a flag is set or a deadline passes. Include after test.h. */
#ifndef SPEC_C_TEST_LOOP_H
#define SPEC_C_TEST_LOOP_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

static void test_loop_tick(evutil_socket_t fd, short what, void *arg)
{
    (void) fd, (void) what, (void) arg;
}

/* Run base until *flag != 0 or ms pass, waking every tick_us at least; returns *flag. */
static inline int test_run_until(struct event_base *base, const int *flag, int ms, int tick_us)
{
    struct event *tick = event_new(base, -1, EV_PERSIST, test_loop_tick, NULL);
    struct timeval tv = {tick_us / 1000000, tick_us % 1000000};
    event_add(tick, &tv);
    double end = test_now_ms() + ms;
    while (!*flag && test_now_ms() < end)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(tick);
    return *flag;
}

/* A TCP port on 127.0.0.1 nothing listens on: bound by the kernel's choice, then closed. */
static inline int test_closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    bind(fd, (struct sockaddr *) &a, sizeof a);
    getsockname(fd, (struct sockaddr *) &a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

#endif
