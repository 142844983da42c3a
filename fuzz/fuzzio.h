/* fuzzio.h -- the client side shared by the socket-driven targets (fuzz_http.c, fuzz_ws.c):
 * write a fuzzed input to the server's connection, half-close, and run the server's event
 * loop until it has answered everything and closed (or *done is set). Header only: each
 * target is one translation unit (CMakeLists.txt builds fuzz/fuzz_*.c alone). */
#ifndef FUZZ_FUZZIO_H
#define FUZZ_FUZZIO_H

#include <errno.h>
#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* fd is the client's end; the input must fit its socket buffer (libFuzzer's -max_len keeps it
 * small), so the writes do not block. The server may close early (400, 413, a close frame):
 * then the rest is dropped. Returns when recv sees the server's close, or when *done (if
 * given) turns non-zero. */
static inline void fuzz_feed(struct event_base *b, int fd, const uint8_t *data, size_t size,
                             const int *done)
{
    size_t off = 0;
    while (off < size) {
        ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t) n;
    }
    shutdown(fd, SHUT_WR);
    char buf[4096];
    while (done == NULL || !*done) {
        event_base_loop(b, EVLOOP_NONBLOCK);
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0 || (done && *done))
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            break; /* the server closed the connection */
        /* nothing yet: wait for the server's next event (I/O or one of its timers) */
        event_base_loop(b, EVLOOP_ONCE);
    }
}

#endif
