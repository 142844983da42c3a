/* idle.c -- hold N idle keep-alive HTTP connections to 127.0.0.1:PORT (tools/bench/run).
 *
 *   idle PORT N MAX_SECONDS READY_FILE
 *
 * Opens N connections one after another; on each it sends one "GET /healthz" and reads the
 * whole answer (headers + Content-Length body), so each is a live keep-alive HTTP connection.
 * Then it writes "N" to READY_FILE and holds them silently until SIGTERM/SIGINT or until
 * MAX_SECONDS have passed since start, whichever comes first. On the way out it counts the
 * connections the server closed (or wrote to) meanwhile, prints one line
 *   idle: opened=N held=H closed_by_peer=C
 * resets them all (SO_LINGER 0, so no TIME_WAIT) and exits 0 (1 if it could not open all N).
 * Every step is bounded by timeouts. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void) sig;
    stop = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Read one HTTP answer with a Content-Length body. 0 on success, -1 otherwise. */
static int read_answer(int fd)
{
    char buf[4096];
    size_t have = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + have, sizeof buf - 1 - have, 0);
        if (n <= 0)
            return -1;
        have += (size_t) n;
        buf[have] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end == NULL) {
            if (have >= sizeof buf - 1)
                return -1;
            continue;
        }
        if (strncmp(buf, "HTTP/1.1 200", 12) != 0)
            return -1;
        char *cl = strcasestr(buf, "\r\ncontent-length:");
        if (cl == NULL || cl > end)
            return -1;
        size_t want = (size_t) (end + 4 - buf) + strtoul(cl + 17, NULL, 10);
        if (have >= want)
            return 0;
        if (want >= sizeof buf - 1)
            return -1;
    }
}

static int open_one(const struct sockaddr_in *sa)
{
    static const char REQ[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *) sa, sizeof *sa) < 0 ||
        send(fd, REQ, sizeof REQ - 1, MSG_NOSIGNAL) != (ssize_t) (sizeof REQ - 1) ||
        read_answer(fd) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: idle PORT N MAX_SECONDS READY_FILE\n");
        return 2;
    }
    int port = atoi(argv[1]), n = atoi(argv[2]);
    double max_s = atof(argv[3]);
    const char *ready = argv[4];
    if (port <= 0 || port > 65535 || n <= 0 || max_s <= 0) {
        fprintf(stderr, "idle: bad arguments\n");
        return 2;
    }
    struct sigaction sa_sig;
    memset(&sa_sig, 0, sizeof sa_sig);
    sa_sig.sa_handler = on_signal;
    sigaction(SIGTERM, &sa_sig, NULL);
    sigaction(SIGINT, &sa_sig, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t) n + 16) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t) port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    double t0 = now_s();
    struct pollfd *fds = calloc((size_t) n, sizeof *fds);
    if (fds == NULL)
        return 1;
    int opened = 0;
    while (opened < n && !stop && now_s() - t0 < max_s) {
        int fd = open_one(&sa);
        if (fd < 0) {
            fprintf(stderr, "idle: connection %d failed: %s\n", opened + 1,
                    errno ? strerror(errno) : "bad answer");
            break;
        }
        fds[opened].fd = fd;
        fds[opened].events = POLLIN | POLLRDHUP;
        opened++;
    }
    fprintf(stderr, "idle: %d connections open in %.2f s\n", opened, now_s() - t0);
    if (opened == n) {
        FILE *f = fopen(ready, "w");
        if (f) {
            fprintf(f, "%d\n", opened);
            fclose(f);
        }
    }
    /* Hold: sleep until told to stop or the time is up. Nothing is sent or read. */
    while (opened == n && !stop && now_s() - t0 < max_s)
        usleep(100 * 1000);

    int closed = 0;
    if (opened > 0 && poll(fds, (nfds_t) opened, 0) > 0)
        for (int i = 0; i < opened; i++)
            if (fds[i].revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR))
                closed++;
    printf("idle: opened=%d held=%d closed_by_peer=%d\n", opened, opened - closed, closed);
    fflush(stdout);
    /* abortive close (RST): no TIME_WAIT left behind, so the next round finds free ports */
    struct linger lg = {1, 0};
    for (int i = 0; i < opened; i++) {
        setsockopt(fds[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fds[i].fd);
    }
    free(fds);
    return opened == n ? 0 : 1;
}
