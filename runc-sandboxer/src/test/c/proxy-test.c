/*
 * Drives the real kuasar-ttrpc-proxy binary (a sanitizer build, from sanitize.sh) with raw frames: this program is
 * both containerd (the client on FRONT.sock) and the JVM (the server on BACK.sock), so it can send what a Java
 * client would not (malformed Requests, split and oversized frames, a backend's oversized frame) and kill the
 * backend at chosen moments. The proxy's protobuf helpers are reused from its source.
 *
 *   proxy-test PROXY_BINARY WORK_DIR
 */
#define main proxy_main
#include "../../main/c/kuasar-ttrpc-proxy.c"
#undef main
#include <poll.h>

static int passed, failed;

static void check(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
    if (ok) passed++; else failed++;
}

static void send_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        p += w;
        n -= (size_t) w;
    }
}

static int recv_all(int fd, uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1; /* EOF, or the 5 s timeout */
        p += r;
        n -= (size_t) r;
    }
    return 0;
}

struct frame {
    uint32_t id;
    uint8_t type;
    size_t len;
    uint8_t data[1 << 16];
};

/* Reads one frame (at most 64 KiB of data); -1 at EOF or after 5 s. */
static int read_frame(int fd, struct frame *f) {
    uint8_t h[HDR];
    if (recv_all(fd, h, HDR) < 0) return -1;
    f->len = be32(h);
    f->id = be32(h + 4);
    f->type = h[8];
    if (f->len > sizeof f->data) return -1;
    return recv_all(fd, f->data, f->len);
}

static size_t put_str(uint8_t *out, int field, const char *s, size_t len) {
    size_t n = 0;
    out[n++] = (uint8_t) (field << 3 | 2);
    n += pb_put_varint(out + n, len);
    memcpy(out + n, s, len);
    return n + len;
}

static void client_request(int fd, uint32_t id, const char *method, uint64_t timeout) {
    uint8_t f[512];
    size_t n = HDR;
    n += put_str(f + n, 1, "containerd.task.v3.Task", 23);
    n += put_str(f + n, 2, method, strlen(method));
    n += put_str(f + n, 3, "\x0a\x02id", 4);
    if (timeout) {
        f[n++] = 4 << 3;
        n += pb_put_varint(f + n, timeout);
    }
    put_be32(f, (uint32_t) (n - HDR));
    put_be32(f + 4, id);
    f[8] = TYPE_REQUEST;
    f[9] = 0;
    send_all(fd, f, n);
}

/* A Response with payload "ok" for id. */
static void send_ok(int fd, uint32_t id) {
    uint8_t f[HDR + 4];
    put_be32(f, 4);
    put_be32(f + 4, id);
    f[8] = TYPE_RESPONSE;
    f[9] = 0;
    memcpy(f + HDR, "\x12\x02ok", 4);
    send_all(fd, f, sizeof f);
}

/* The status code of a Response (0 if none), its message in msg. */
static int status_of(const struct frame *f, char *msg, size_t cap) {
    const uint8_t *p = f->data, *end = f->data + f->len;
    struct pb_field fl, sf;
    int code = 0;
    msg[0] = 0;
    while (pb_next(&p, end, &fl) > 0) {
        if (fl.num != 1 || fl.wt != 2) continue;
        const uint8_t *q = fl.data, *qe = fl.data + fl.len;
        while (pb_next(&q, qe, &sf) > 0) {
            if (sf.num == 1 && sf.wt == 0) code = (int) sf.v;
            if (sf.num == 2 && sf.wt == 2) snprintf(msg, cap, "%.*s", (int) sf.len, (const char *) sf.data);
        }
    }
    return code;
}

static int timeout_of(const struct frame *f, int64_t *timeout) {
    struct reqinfo ri;
    if (parse_request(f->data, f->len, &ri) < 0) return -1;
    *timeout = ri.timeout_nano;
    return 0;
}

static int with_timeouts(int fd) {
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static int dial(const char *path) {
    struct sockaddr_un a;
    fill_addr(&a, path);
    for (int i = 0; i < 500; i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(fd, (struct sockaddr *) &a, sizeof a) == 0) return with_timeouts(fd);
        close(fd);
        usleep(10000);
    }
    return -1;
}

static int accept_backend(int lfd) {
    struct pollfd pfd = {lfd, POLLIN, 0};
    if (poll(&pfd, 1, 5000) != 1) return -1;
    return with_timeouts(accept4(lfd, NULL, NULL, SOCK_CLOEXEC));
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: proxy-test PROXY_BINARY WORK_DIR\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char front[256], back[256], logf[256];
    snprintf(front, sizeof front, "%s/f.sock", argv[2]);
    snprintf(back, sizeof back, "%s/b.sock", argv[2]);
    snprintf(logf, sizeof logf, "%s/proxy.log", argv[2]);
    mkdir(argv[2], 0700);
    unlink(back);
    struct sockaddr_un ba;
    fill_addr(&ba, back);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (bind(lfd, (struct sockaddr *) &ba, sizeof ba) < 0 || listen(lfd, 16) < 0) {
        perror(back);
        return 2;
    }
    pid_t proxy = fork();
    if (proxy == 0) {
        execl(argv[1], argv[1], "--listen", front, "--backend", back, "--log", logf, (char *) NULL);
        _exit(127);
    }
    struct frame *f = malloc(sizeof *f);
    char msg[512];
    int64_t timeout = 0;
    int c = dial(front);
    int b = accept_backend(lfd);
    check(c >= 0 && b >= 0, "the proxy listens and dials the backend for a client");

    /* Pass-through, both ways. */
    client_request(c, 1, "State", 0);
    check(read_frame(b, f) == 0 && f->id == 1 && f->type == TYPE_REQUEST, "a request reaches the backend");
    send_ok(b, 1);
    check(read_frame(c, f) == 0 && f->id == 1 && f->type == TYPE_RESPONSE && status_of(f, msg, sizeof msg) == 0,
          "its response reaches the client");

    /* A Request that is not protobuf is forwarded as it is: the backend answers it. */
    uint8_t junk[HDR + 5] = {0, 0, 0, 5, 0, 0, 0, 3, TYPE_REQUEST, 0, 0xff, 0xff, 0xff, 0xff, 0xff};
    send_all(c, junk, sizeof junk);
    check(read_frame(b, f) == 0 && f->id == 3 && f->len == 5 && memcmp(f->data, junk + HDR, 5) == 0,
          "a malformed request is forwarded byte for byte");
    send_ok(b, 3);
    check(read_frame(c, f) == 0 && f->id == 3, "and answered");

    /* A frame written a byte at a time, and an unknown frame type. */
    uint8_t split[HDR + 64];
    size_t sl = HDR + put_str(split + HDR, 2, "Pids", 4);
    put_be32(split, (uint32_t) (sl - HDR));
    put_be32(split + 4, 5);
    split[8] = TYPE_REQUEST;
    split[9] = 0;
    for (size_t i = 0; i < sl; i++) send_all(c, split + i, 1);
    uint8_t odd[HDR + 2] = {0, 0, 0, 2, 0, 0, 0, 5, 9, 0, 'h', 'i'};
    send_all(c, odd, sizeof odd);
    check(read_frame(b, f) == 0 && f->id == 5 && f->len == sl - HDR, "a frame split into single bytes arrives whole");
    check(read_frame(b, f) == 0 && f->id == 5 && f->type == 9, "a frame of an unknown type is forwarded");
    send_ok(b, 5);
    check(read_frame(c, f) == 0 && f->id == 5, "answered");

    /* An oversized frame: answered RESOURCE_EXHAUSTED, its data skipped, the connection kept. */
    uint8_t big[HDR] = {0, 0, 0, 0, 0, 0, 0, 7, TYPE_REQUEST, 0};
    put_be32(big, MAX_DATA + 1);
    send_all(c, big, HDR);
    uint8_t *data = malloc(MAX_DATA + 1);
    memset(data, 'x', MAX_DATA + 1);
    send_all(c, data, MAX_DATA + 1);
    free(data);
    client_request(c, 9, "State", 0);
    check(read_frame(c, f) == 0 && f->id == 7 && status_of(f, msg, sizeof msg) == CODE_RESOURCE_EXHAUSTED
          && strcmp(msg, "message length 4194305 exceeds maximum message size of 4194304") == 0,
          "an oversized frame is answered RESOURCE_EXHAUSTED (%s)", msg);
    check(read_frame(b, f) == 0 && f->id == 9, "the next request on that connection reaches the backend");
    send_ok(b, 9);
    check(read_frame(c, f) == 0 && f->id == 9 && status_of(f, msg, sizeof msg) == 0, "and is answered");

    /* The backend dies with a Wait (with a deadline) and a Kill in flight. */
    client_request(c, 11, "Wait", 30000000000ull);
    client_request(c, 13, "Kill", 0);
    check(read_frame(b, f) == 0 && f->id == 11 && read_frame(b, f) == 0 && f->id == 13, "Wait and Kill in flight");
    /* It goes away writing an oversized frame: a broken backend is a dead one. */
    put_be32(big, MAX_DATA + 1);
    put_be32(big + 4, 11);
    big[8] = TYPE_RESPONSE;
    send_all(b, big, HDR);
    check(read_frame(c, f) == 0 && f->id == 13 && status_of(f, msg, sizeof msg) == CODE_UNAVAILABLE
          && strstr(msg, "Task/Kill: ") && strstr(msg, "not idempotent"), "the Kill is answered UNAVAILABLE (%s)", msg);
    uint8_t one;
    check(recv(b, &one, 1, 0) == 0, "the proxy dropped the broken backend connection");
    close(b);
    b = accept_backend(lfd);
    check(b >= 0 && read_frame(b, f) == 0 && f->id == 11 && timeout_of(f, &timeout) == 0 && timeout > 0
          && timeout < 30000000000ll, "the Wait is replayed to the next backend with what is left of its timeout");
    send_ok(b, 11);
    check(read_frame(c, f) == 0 && f->id == 11 && status_of(f, msg, sizeof msg) == 0, "and answered");

    /* A client that goes away with a request pending: its backend connection goes too. */
    int c2 = dial(front);
    int b2 = accept_backend(lfd);
    client_request(c2, 1, "Wait", 0);
    check(read_frame(b2, f) == 0 && f->id == 1, "a second client's request reaches its own backend connection");
    close(c2);
    check(recv(b2, &one, 1, 0) == 0, "its backend connection is closed when it leaves");
    close(b2);

    /* SIGTERM with a connection open and a request pending. */
    client_request(c, 15, "Wait", 0);
    check(read_frame(b, f) == 0 && f->id == 15, "one more call in flight");
    kill(proxy, SIGTERM);
    int st = -1;
    for (int i = 0; i < 1000 && waitpid(proxy, &st, WNOHANG) == 0; i++) usleep(10000);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: the proxy exits 0 (wait status %d)", st);
    check(access(front, F_OK) != 0, "and removes its socket");
    close(c);
    close(b);
    free(f);
    printf("proxy: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
