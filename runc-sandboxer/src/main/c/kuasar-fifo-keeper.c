/*
 * kuasar-fifo-keeper: holds containerd's stdio FIFOs open while a sandboxer daemon restarts.
 *
 *   kuasar-fifo-keeper --socket PATH --pid-file PATH [--log PATH]
 *
 * Where a sandboxer itself writes a container's output into containerd's FIFO (the microVM sandboxer bridges the
 * guest's streams), containerd's reader sees end-of-file the moment that daemon dies, and CRI stops copying the
 * container's log for good; and while containerd restarts, the daemon's writes would fail (EPIPE) for want of a
 * reader. This process outlives both and holds each FIFO open for reading and writing (O_RDWR, as containerd's own
 * shim holds its FIFOs): no end-of-file and no EPIPE on either side while the other is away; what is written
 * meanwhile waits in the pipe. It never reads or writes them. The daemon lets a FIFO go when its stream really ends.
 *
 * Line protocol on a Unix stream socket (one command per line, one answer line each):
 *   HOLD PATH     hold the FIFO at PATH   -> "OK" | "ERR <reason>"
 *   DROP PATH     let it go               -> "OK"
 *   LIST          one PATH per line, then "."
 * Only peers of our own uid may connect. One keeper per pid file (its lock is held for the keeper's lifetime).
 * SIGTERM/SIGINT: close everything, remove the socket, exit 0. Single-threaded epoll loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_LINE 4352 /* "HOLD " + PATH_MAX */
#define MAX_CLIENTS 64
#define MAX_HELD 65536

struct held {
    char *path;
    int fd;
};

struct client {
    int fd;
    size_t len;
    char line[MAX_LINE];
};

static struct held *held;
static size_t n_held, cap_held;
static struct client clients[MAX_CLIENTS];
static int ep = -1;
static FILE *log_file;

static void logf_(const char *fmt, ...) {
    if (!log_file) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(log_file, fmt, ap);
    va_end(ap);
    fputc('\n', log_file);
    fflush(log_file);
}

static void drop_at(size_t i) {
    close(held[i].fd);
    logf_("dropped %s", held[i].path);
    free(held[i].path);
    held[i] = held[--n_held];
}

static void drop_path(const char *path) {
    for (size_t i = 0; i < n_held;) {
        if (strcmp(held[i].path, path) == 0) drop_at(i);
        else i++;
    }
}

static const char *hold(const char *path) {
    for (size_t i = 0; i < n_held; i++) {
        if (strcmp(held[i].path, path) == 0) return NULL; /* already held */
    }
    if (n_held == MAX_HELD) return "too many held FIFOs";
    if (n_held == cap_held) {
        size_t cap = cap_held ? cap_held * 2 : 64;
        struct held *h = realloc(held, cap * sizeof *h);
        if (!h) return "out of memory";
        held = h;
        cap_held = cap;
    }
    /* O_RDWR never blocks on a FIFO; O_NONBLOCK keeps a path that is not a FIFO (a tty, a device) from blocking */
    int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return strerror(errno);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) {
        close(fd);
        return "not a FIFO";
    }
    char *copy = strdup(path);
    if (!copy) {
        close(fd);
        return "out of memory";
    }
    held[n_held++] = (struct held){.path = copy, .fd = fd};
    logf_("holding %s", path);
    return NULL;
}

static int write_all(int fd, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        s += w;
        n -= (size_t) w;
    }
    return 0;
}

static int reply(int fd, const char *err) {
    char buf[256];
    int n = err ? snprintf(buf, sizeof buf, "ERR %s\n", err) : snprintf(buf, sizeof buf, "OK\n");
    return write_all(fd, buf, (size_t) n);
}

/* Runs one command line; -1 if the client must be dropped. */
static int command(int fd, char *line) {
    if (strncmp(line, "HOLD /", 6) == 0) return reply(fd, hold(line + 5));
    if (strncmp(line, "DROP ", 5) == 0) {
        drop_path(line + 5);
        return reply(fd, NULL);
    }
    if (strcmp(line, "LIST") == 0) {
        for (size_t i = 0; i < n_held; i++) {
            if (write_all(fd, held[i].path, strlen(held[i].path)) || write_all(fd, "\n", 1)) return -1;
        }
        return write_all(fd, ".\n", 2);
    }
    return reply(fd, "unknown command (HOLD /PATH, DROP PATH, LIST)");
}

static void close_client(struct client *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

static void on_client(struct client *c) {
    ssize_t n = read(c->fd, c->line + c->len, sizeof c->line - c->len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
        close_client(c);
        return;
    }
    c->len += (size_t) n;
    char *start = c->line, *nl;
    while ((nl = memchr(start, '\n', c->len - (size_t) (start - c->line))) != NULL) {
        *nl = '\0';
        if (command(c->fd, start) != 0) {
            close_client(c);
            return;
        }
        start = nl + 1;
    }
    c->len -= (size_t) (start - c->line);
    memmove(c->line, start, c->len);
    if (c->len == sizeof c->line) { /* a line longer than any command: not a client of ours */
        reply(c->fd, "line too long");
        close_client(c);
    }
}

static void on_accept(int lfd) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != getuid()) {
        close(fd);
        return;
    }
    for (int i = 0; i < MAX_CLIENTS; i++) {
        if (clients[i].fd < 0) {
            struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t) i};
            clients[i].fd = fd;
            clients[i].len = 0;
            if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) close_client(&clients[i]);
            return;
        }
    }
    close(fd); /* all slots busy */
}

static void usage(void) {
    fprintf(stderr, "usage: kuasar-fifo-keeper --socket PATH --pid-file PATH [--log PATH]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *sock_path = NULL, *pid_file = NULL, *log_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) sock_path = argv[++i];
        else if (strcmp(argv[i], "--pid-file") == 0 && i + 1 < argc) pid_file = argv[++i];
        else if (strcmp(argv[i], "--log") == 0 && i + 1 < argc) log_path = argv[++i];
        else usage();
    }
    if (!sock_path || !pid_file) usage();
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(sock_path) >= sizeof addr.sun_path) {
        fprintf(stderr, "kuasar-fifo-keeper: socket path too long: %s\n", sock_path);
        return 1;
    }
    int pid_fd = open(pid_file, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (pid_fd < 0) {
        fprintf(stderr, "kuasar-fifo-keeper: %s: %s\n", pid_file, strerror(errno));
        return 1;
    }
    if (flock(pid_fd, LOCK_EX | LOCK_NB) != 0) {
        printf("already running\n");
        return 0;
    }
    setsid(); /* not in the daemon's process group: a signal to that group must not reach the keeper */
    char pid_text[32];
    int pid_len = snprintf(pid_text, sizeof pid_text, "%d\n", (int) getpid());
    if (ftruncate(pid_fd, 0) != 0 || pwrite(pid_fd, pid_text, (size_t) pid_len, 0) != pid_len) {
        fprintf(stderr, "kuasar-fifo-keeper: cannot write %s\n", pid_file);
        return 1;
    }
    if (log_path) log_file = fopen(log_path, "ae");

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGPIPE);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);

    strcpy(addr.sun_path, sock_path);
    unlink(sock_path);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    mode_t old = umask(077);
    if (lfd < 0 || bind(lfd, (struct sockaddr *) &addr, sizeof addr) != 0 || listen(lfd, 16) != 0) {
        fprintf(stderr, "kuasar-fifo-keeper: %s: %s\n", sock_path, strerror(errno));
        return 1;
    }
    umask(old);
    ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < MAX_CLIENTS; i++) clients[i].fd = -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t) MAX_CLIENTS};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.u64 = (uint64_t) MAX_CLIENTS + 1;
    epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
    logf_("kuasar-fifo-keeper %d serving %s", (int) getpid(), sock_path);
    printf("ready\n");
    fflush(stdout);

    for (;;) {
        struct epoll_event evs[32];
        int n = epoll_wait(ep, evs, 32, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        for (int i = 0; i < n; i++) {
            uint64_t d = evs[i].data.u64;
            if (d == MAX_CLIENTS) {
                on_accept(lfd);
            } else if (d == MAX_CLIENTS + 1) {
                struct signalfd_siginfo si;
                if (read(sfd, &si, sizeof si) == (ssize_t) sizeof si && si.ssi_signo != SIGPIPE) goto out;
            } else if (clients[d].fd >= 0) {
                on_client(&clients[d]);
            }
        }
    }
out:
    unlink(sock_path);
    while (n_held > 0) drop_at(n_held - 1);
    free(held);
    logf_("kuasar-fifo-keeper %d exiting", (int) getpid());
    return 0;
}
