/*
 * kuasar-ttrpc-proxy: keeps containerd's ttrpc connections to runc-sandboxer's Task API alive across restarts of
 * the JVM.
 *
 *   kuasar-ttrpc-proxy --listen FRONT.sock --backend BACK.sock [--pid-file PATH] [--log PATH] [--daemon]
 *                      [--max-conn-bytes N] [--strike-window-ms N]
 *
 * containerd dials FRONT.sock once per container and never reconnects; runc-sandboxer listens on BACK.sock. For
 * every front connection the proxy opens one backend connection (so each keeps its own stream-id space) and copies
 * ttrpc frames both ways. It parses the framing (10-byte header: uint32 BE data length, uint32 BE stream id,
 * uint8 type, uint8 flags; at most 4 MiB of data) and keeps a copy of every Request frame from the front until
 * the backend sends the Response with that stream id.
 *
 * When the backend connection ends (the JVM was killed or restarted), the front connection stays open. The proxy
 * retries BACK.sock every 150 ms; once connected it sends every unanswered Request in increasing stream-id order
 * (ttrpc servers require increasing ids on a connection), then the front frames that arrived meanwhile, then
 * forwards as usual. A request the dead backend had not received (not all its bytes written to it) is simply sent.
 * One it had received may have run, so it is replayed only if all of these hold, and otherwise answered at once with
 * UNAVAILABLE (14) and a message saying why, so containerd is never left waiting for an answer that cannot come:
 *   - it is idempotent: Wait, State, Stats, Pids or Connect of containerd.task.v2.Task / containerd.task.v3.Task,
 *     or WaitSandbox, SandboxStatus, Platform or PingSandbox of containerd.runtime.sandbox.v1.Sandbox (reads and
 *     waits; Create, Start, Kill, Exec, Delete, StopSandbox, ... may have taken effect and are never replayed);
 *   - its deadline (the proxy's receipt time + the Request's timeout_nano) has not passed; the replayed Request
 *     carries what is left of its timeout, and any request whose deadline passes while the backend is down is
 *     answered rather than sent;
 *   - it has not been received by MAX_STRIKES (2) backends that each died within 10 s (--strike-window-ms) of
 *     receiving it: a request that crashes the JVM must not crash-loop it (a long Wait survives any number of
 *     restarts spaced further apart).
 * Not replayed either: Data frames (streaming calls' messages) already handed to the dead backend, and responses
 * the dead backend had only partly written. ttrpc has no cancellation: a call the client has given up on without a
 * deadline is replayed too (its late answer is ignored by the client).
 *
 * A backend frame is forwarded to the front only once complete, so the front never sees a torn frame. A front frame
 * longer than 4 MiB is answered with RESOURCE_EXHAUSTED (8, "message length N exceeds maximum message size of
 * 4194304", as ttrpc servers answer) and its data discarded; the connection stays. A backend one is treated as a
 * backend failure. Reads stop while the other side's output queue is above 1 MiB (backpressure), and a connection
 * whose buffers (output queues, unanswered requests) exceed --max-conn-bytes (16 MiB) is dropped.
 * Only peers of our own uid may connect, as for runc-sandboxer's own ttrpc server.
 *
 * --daemon: double fork + setsid; the launcher exits 0 (printing "started <pid>") once the daemon listens and has
 * written the pid file, or 1 if it failed. If the pid file is locked by or names a live proxy for the same socket, or
 * FRONT.sock already accepts connections, it prints "already running" and exits 0. SIGTERM/SIGINT close everything,
 * remove FRONT.sock and the pid file, exit 0. SIGHUP reopens the --log file. Single-threaded epoll loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROC_NAME "kuasar-ttrpc-px"
#define HDR 10u
#define MAX_DATA (4u << 20)
#define TYPE_REQUEST 1
#define TYPE_RESPONSE 2
#define CODE_RESOURCE_EXHAUSTED 8
#define CODE_UNAVAILABLE 14
#define MAX_STRIKES 2 /* backends that may die right after receiving one request */
#define READ_CHUNK (64u * 1024)
#define HIGH_WATER (1u << 20)
#define RETRY_MS 150
#define MAX_EVENTS 64

/* Bytes p[off, len). A buffer that becomes empty is freed: idle connections hold no memory beyond struct conn. */
struct buf {
    uint8_t *p;
    size_t off, len, cap;
};

/* A Request frame (header and data) awaiting its Response. */
struct req {
    struct req *next;
    uint32_t id;
    uint8_t replayable;   /* an idempotent call: see is_replayable */
    uint8_t strikes;      /* backends that died within STRIKE_WINDOW_NS of receiving it */
    uint8_t in_flight;    /* a backend that died had received it */
    uint64_t deadline;    /* monotonic ns; 0: none */
    uint64_t sent_end;    /* where it ends in the current backend connection's byte stream; 0: not sent there */
    uint64_t sent_at;     /* monotonic ns */
    size_t len;
    uint8_t frame[];
};

enum kind { K_LISTEN, K_SIGNAL, K_FRONT, K_BACK };
enum back_state { B_DOWN, B_CONNECTING, B_UP };

struct conn;
struct handle {
    enum kind kind;
    struct conn *c;
};

struct conn {
    struct conn *prev, *next;
    struct handle hf, hb;
    int front, back;
    enum back_state state;
    int dead;
    uint32_t ev_front, ev_back; /* the masks registered with epoll */
    struct buf fin, fout;       /* from / to the front (containerd) */
    struct buf bin, bout;       /* from / to the backend (the JVM) */
    struct buf held;            /* front non-Request frames that arrived while the backend was down */
    struct req *pending;        /* sorted by stream id */
    size_t pending_bytes;
    uint64_t skip;              /* data bytes of an oversized front frame still to discard */
    uint64_t b_queued, b_sent;  /* bytes handed to / written to the current backend connection */
    uint64_t retry_at;          /* when B_DOWN */
    unsigned long id, failures, replays, refused;
};

static int ep = -1, listen_fd = -1, sig_fd = -1;
static int log_fd = 2; /* --log is dup2'd onto 2; the fuzzer turns logging off */
static struct conn *conns;
static struct conn *graveyard;
static unsigned long next_conn_id = 1;
static size_t max_conn_bytes = 16u << 20;
static uint64_t strike_window_ns; /* "right after": --strike-window-ms, 10 s */
static const char *front_path, *back_path, *log_path;
static struct sockaddr_un back_addr;
static uint64_t next_retry; /* earliest retry_at of a B_DOWN connection, 0 if none */
static uint64_t listen_paused_until;
static uint8_t scratch[READ_CHUNK];
static struct handle listen_handle = {K_LISTEN, NULL};

static void logmsg(const char *fmt, ...) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[1024];
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ kuasar-ttrpc-proxy[%d]: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, (int) getpid());
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (n > (int) sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    if (log_fd >= 0 && write(log_fd, line, n) < 0) { /* nowhere to report it */ }
}

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t) (v >> 24);
    p[1] = (uint8_t) (v >> 16);
    p[2] = (uint8_t) (v >> 8);
    p[3] = (uint8_t) v;
}

/* ---- the little protobuf the proxy reads (ttrpc.Request) and writes (ttrpc.Response with a status) ---- */

struct pb_field {
    uint32_t num;
    int wt;              /* wire type */
    uint64_t v;          /* wire type 0 */
    const uint8_t *data; /* wire type 2 */
    size_t len;
};

static int pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p >= end) return -1;
        uint8_t b = *(*p)++;
        x |= (uint64_t) (b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Reads the field at *p: 1 if there is one, 0 at the end of the message, -1 if it is malformed. */
static int pb_next(const uint8_t **p, const uint8_t *end, struct pb_field *f) {
    if (*p >= end) return 0;
    uint64_t tag, n;
    if (pb_varint(p, end, &tag) < 0 || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) return -1;
    f->num = (uint32_t) (tag >> 3);
    f->wt = (int) (tag & 7);
    f->v = 0;
    f->data = NULL;
    f->len = 0;
    switch (f->wt) {
        case 0:
            return pb_varint(p, end, &f->v) < 0 ? -1 : 1;
        case 1:
        case 5: {
            size_t k = f->wt == 1 ? 8 : 4;
            if ((size_t) (end - *p) < k) return -1;
            *p += k;
            return 1;
        }
        case 2:
            if (pb_varint(p, end, &n) < 0 || n > (uint64_t) (end - *p)) return -1;
            f->data = *p;
            f->len = (size_t) n;
            *p += n;
            return 1;
        default:
            return -1; /* groups: not in ttrpc's messages */
    }
}

/* What the proxy needs of a ttrpc Request (pointers into its frame). */
struct reqinfo {
    const uint8_t *service, *method;
    size_t service_len, method_len;
    int64_t timeout_nano;
};

/* Returns 0, or -1 if data is not a ttrpc Request. */
static int parse_request(const uint8_t *data, size_t n, struct reqinfo *ri) {
    memset(ri, 0, sizeof *ri);
    const uint8_t *p = data, *end = data + n;
    struct pb_field f;
    int r;
    while ((r = pb_next(&p, end, &f)) > 0) {
        if (f.num > 5) continue; /* unknown: skipped, as protobuf does */
        if (f.num == 4 ? f.wt != 0 : f.wt != 2) return -1;
        if (f.num == 1) {
            ri->service = f.data;
            ri->service_len = f.len;
        } else if (f.num == 2) {
            ri->method = f.data;
            ri->method_len = f.len;
        } else if (f.num == 4) {
            ri->timeout_nano = (int64_t) f.v;
        }
    }
    return r;
}

static int bytes_are(const uint8_t *s, size_t n, const char *lit) {
    return n == strlen(lit) && memcmp(s, lit, n) == 0;
}

/*
 * The calls that are replayed to a new backend: the read and wait methods of containerd's Task service, and of
 * containerd 1.7's shim Sandbox service (served on the same socket), which change nothing, so running one again is
 * harmless (containerd always has a Wait in flight per container, and 1.7 one WaitSandbox per pod, whose failure
 * would mark the pod NOTREADY). Everything else (Create, Start, Kill, Exec, Delete, Update, StopSandbox, ...) may
 * have taken effect on the dead backend.
 */
static int is_replayable(const struct reqinfo *ri) {
    static const char *const replayable[][2] = {
        {"containerd.task.v2.Task", "Wait"}, {"containerd.task.v2.Task", "State"},
        {"containerd.task.v2.Task", "Stats"}, {"containerd.task.v2.Task", "Pids"},
        {"containerd.task.v2.Task", "Connect"},
        {"containerd.task.v3.Task", "Wait"}, {"containerd.task.v3.Task", "State"},
        {"containerd.task.v3.Task", "Stats"}, {"containerd.task.v3.Task", "Pids"},
        {"containerd.task.v3.Task", "Connect"},
        {"containerd.runtime.sandbox.v1.Sandbox", "WaitSandbox"},
        {"containerd.runtime.sandbox.v1.Sandbox", "SandboxStatus"},
        {"containerd.runtime.sandbox.v1.Sandbox", "Platform"},
        {"containerd.runtime.sandbox.v1.Sandbox", "PingSandbox"},
    };
    for (size_t i = 0; i < sizeof replayable / sizeof *replayable; i++) {
        if (bytes_are(ri->service, ri->service_len, replayable[i][0])
            && bytes_are(ri->method, ri->method_len, replayable[i][1])) {
            return 1;
        }
    }
    return 0;
}

static size_t pb_put_varint(uint8_t *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t) (v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t) v;
    return n;
}

/*
 * A copy of a Request frame whose timeout_nano is what is left of its deadline, so the backend does not start the
 * clock again; NULL if out of memory or the frame does not parse.
 */
static uint8_t *with_timeout(const uint8_t *frame, size_t len, uint64_t timeout, size_t *out_len) {
    uint8_t *out = malloc(len + 11);
    if (out == NULL) return NULL;
    const uint8_t *p = frame + HDR, *end = frame + len, *at = p;
    size_t n = HDR;
    struct pb_field f;
    int r;
    while ((r = pb_next(&p, end, &f)) > 0) {
        if (f.num != 4) {
            memcpy(out + n, at, (size_t) (p - at));
            n += (size_t) (p - at);
        }
        at = p;
    }
    if (r < 0) {
        free(out);
        return NULL;
    }
    out[n++] = 4 << 3;
    n += pb_put_varint(out + n, timeout);
    memcpy(out, frame, HDR);
    put_be32(out, (uint32_t) (n - HDR));
    *out_len = n;
    return out;
}

/* A Response frame for stream id with a gRPC status and no payload, as a ttrpc server writes it. */
static size_t status_frame(uint8_t *out, size_t cap, uint32_t id, int code, const char *msg) {
    size_t m = strlen(msg);
    if (m > 400) m = 400;
    if (cap < HDR + 420) return 0;
    uint8_t st[420];
    size_t sl = 0;
    st[sl++] = 1 << 3; /* google.rpc.Status.code */
    sl += pb_put_varint(st + sl, (uint64_t) code);
    st[sl++] = 2 << 3 | 2; /* .message */
    sl += pb_put_varint(st + sl, m);
    memcpy(st + sl, msg, m);
    sl += m;
    uint8_t *d = out + HDR;
    size_t dl = 0;
    d[dl++] = 1 << 3 | 2; /* ttrpc.Response.status */
    dl += pb_put_varint(d + dl, sl);
    memcpy(d + dl, st, sl);
    dl += sl;
    put_be32(out, (uint32_t) dl);
    put_be32(out + 4, id);
    out[8] = TYPE_RESPONSE;
    out[9] = 0;
    return HDR + dl;
}

/* ---- buffers ---- */

static size_t buf_size(const struct buf *b) {
    return b->len - b->off;
}

static void buf_free(struct buf *b) {
    free(b->p);
    b->p = NULL;
    b->off = b->len = b->cap = 0;
}

static int buf_append(struct buf *b, const uint8_t *data, size_t n) {
    if (n == 0) return 0;
    if (b->off > 0 && b->len + n > b->cap) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (p == NULL) return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

static void buf_consume(struct buf *b, size_t n) {
    b->off += n;
    if (b->off >= b->len) buf_free(b);
}

/* ---- connections ---- */

static void set_events(int fd, struct handle *h, uint32_t *cur, uint32_t want) {
    if (*cur == want) return;
    struct epoll_event ev = {.events = want, .data.ptr = h};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0) logmsg("epoll_ctl: %s", strerror(errno));
    *cur = want;
}

static void update_events(struct conn *c) {
    if (c->dead) return;
    size_t queued = c->state == B_UP ? buf_size(&c->bout) : buf_size(&c->held);
    uint32_t f = EPOLLRDHUP;
    if (queued < HIGH_WATER) f |= EPOLLIN;
    if (buf_size(&c->fout) > 0) f |= EPOLLOUT;
    set_events(c->front, &c->hf, &c->ev_front, f);
    if (c->back >= 0) {
        uint32_t b = EPOLLRDHUP;
        if (c->state == B_CONNECTING) {
            b |= EPOLLOUT;
        } else {
            if (buf_size(&c->fout) < HIGH_WATER) b |= EPOLLIN;
            if (buf_size(&c->bout) > 0) b |= EPOLLOUT;
        }
        set_events(c->back, &c->hb, &c->ev_back, b);
    }
}

static void free_pending(struct conn *c) {
    while (c->pending) {
        struct req *r = c->pending;
        c->pending = r->next;
        free(r);
    }
    c->pending_bytes = 0;
}

static void close_back_fd(struct conn *c) {
    if (c->back >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->back, NULL);
        close(c->back);
        c->back = -1;
        c->ev_back = 0;
    }
    buf_free(&c->bin);
    buf_free(&c->bout);
}

/* Closes both sides; the memory is freed after the current batch of events (which may still name c). */
static void kill_conn(struct conn *c, const char *why) {
    if (c->dead) return;
    if (why) logmsg("connection %lu closed: %s", c->id, why);
    c->dead = 1;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->front, NULL);
    close(c->front);
    c->front = -1;
    close_back_fd(c);
    buf_free(&c->fin);
    buf_free(&c->fout);
    buf_free(&c->held);
    free_pending(c);
    if (c->prev) c->prev->next = c->next; else conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->next = graveyard;
    graveyard = c;
}

static void bury_dead(void) {
    while (graveyard) {
        struct conn *c = graveyard;
        graveyard = c->next;
        free(c);
    }
}

static int over_cap(struct conn *c) {
    return c->pending_bytes + buf_size(&c->held) > max_conn_bytes || buf_size(&c->fout) > max_conn_bytes
           || buf_size(&c->bout) > max_conn_bytes;
}

static void schedule_retry(struct conn *c, uint64_t at) {
    c->retry_at = at;
    if (next_retry == 0 || at < next_retry) next_retry = at;
}

static int send_to(struct conn *c, int to_back, const uint8_t *data, size_t n);

/* Answers stream id with a gRPC status in place of the backend. Returns -1 if c died. */
static int reply_status(struct conn *c, uint32_t id, int code, const char *msg) {
    uint8_t frame[HDR + 420];
    size_t n = status_frame(frame, sizeof frame, id, code, msg);
    logmsg("connection %lu: answered stream %u with status %d: %s", c->id, id, code, msg);
    return send_to(c, 0, frame, n);
}

/* Answers a pending request UNAVAILABLE (why: it will not be sent again) and forgets it. Returns -1 if c died. */
static int refuse(struct conn *c, struct req **at, const char *why) {
    struct req *r = *at;
    *at = r->next;
    c->pending_bytes -= r->len;
    c->refused++;
    struct reqinfo ri;
    char msg[400];
    if (parse_request(r->frame + HDR, r->len - HDR, &ri) == 0) {
        snprintf(msg, sizeof msg, "%.*s/%.*s: %s", (int) (ri.service_len > 100 ? 100 : ri.service_len),
                 (const char *) ri.service, (int) (ri.method_len > 60 ? 60 : ri.method_len),
                 (const char *) ri.method, why);
    } else {
        snprintf(msg, sizeof msg, "%s", why);
    }
    uint32_t id = r->id;
    free(r);
    return reply_status(c, id, CODE_UNAVAILABLE, msg);
}

#define WHY_NOT_IDEMPOTENT "the sandboxer restarted while the call was in flight; not replayed because it is not " \
                           "idempotent (it may or may not have taken effect)"
#define WHY_EXPIRED "the sandboxer restarted while the call was in flight; not replayed because its deadline passed"
#define WHY_EXPIRED_UNSENT "the sandboxer was down until the call's deadline passed; not sent"
static char why_strikes[256]; /* see set_strike_window */

static void set_strike_window(uint64_t ms) {
    strike_window_ns = ms * 1000000ull;
    char window[32];
    if (ms % 1000 == 0) snprintf(window, sizeof window, "%llu s", (unsigned long long) (ms / 1000));
    else snprintf(window, sizeof window, "%llu ms", (unsigned long long) ms);
    snprintf(why_strikes, sizeof why_strikes, "the sandboxer restarted while the call was in flight, twice within %s "
             "of receiving it; not replayed again (it may be what brings the sandboxer down)", window);
}

static void back_failed(struct conn *c, const char *why) {
    if (c->dead || c->state == B_DOWN) return;
    int was_up = c->state == B_UP;
    close_back_fd(c);
    c->state = B_DOWN;
    schedule_retry(c, now_ms() + RETRY_MS);
    if (!was_up) return;
    c->failures++;
    /* Requests the backend had received (all their bytes written to it) may have run: replay only those that are
     * safe to run again, still wanted, and not suspected of killing backends. Unsent ones are simply sent later. */
    uint64_t now = now_ns();
    unsigned long kept = 0, refused = 0;
    for (struct req **at = &c->pending; *at;) {
        struct req *r = *at;
        int received = r->sent_end != 0 && r->sent_end <= c->b_sent;
        r->sent_end = 0;
        if (received) {
            r->in_flight = 1;
            if (now - r->sent_at < strike_window_ns && r->strikes < MAX_STRIKES) r->strikes++;
            const char *no = !r->replayable ? WHY_NOT_IDEMPOTENT
                             : r->deadline && now >= r->deadline ? WHY_EXPIRED
                             : r->strikes >= MAX_STRIKES ? why_strikes : NULL;
            if (no) {
                refused++;
                if (refuse(c, at, no) < 0) return;
                continue;
            }
        }
        kept++;
        at = &r->next;
    }
    logmsg("connection %lu: backend lost (%s); %lu unanswered request(s) kept for replay, %lu answered UNAVAILABLE",
           c->id, why, kept, refused);
}

/* Queues bytes to one side, writing at once when nothing is queued before them. Returns -1 if c died. */
static int send_to(struct conn *c, int to_back, const uint8_t *data, size_t n) {
    struct buf *out = to_back ? &c->bout : &c->fout;
    int fd = to_back ? c->back : c->front;
    if (to_back) c->b_queued += n;
    if (buf_size(out) == 0) {
        ssize_t w = send(fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                if (to_back) {
                    back_failed(c, strerror(errno));
                    return 0;
                }
                kill_conn(c, NULL);
                return -1;
            }
            w = 0;
        }
        if (to_back) c->b_sent += (size_t) w;
        data += w;
        n -= (size_t) w;
    }
    if (n > 0 && buf_append(out, data, n) < 0) {
        kill_conn(c, "out of memory");
        return -1;
    }
    return 0;
}

static int flush(struct conn *c, int to_back) {
    struct buf *out = to_back ? &c->bout : &c->fout;
    int fd = to_back ? c->back : c->front;
    while (buf_size(out) > 0) {
        ssize_t w = send(fd, out->p + out->off, buf_size(out), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            if (to_back) {
                back_failed(c, strerror(errno));
                return 0;
            }
            kill_conn(c, NULL);
            return -1;
        }
        if (to_back) c->b_sent += (size_t) w;
        buf_consume(out, (size_t) w);
    }
    return 0;
}

static struct req *add_pending(struct conn *c, const uint8_t *frame, size_t len) {
    struct req *r = calloc(1, sizeof *r + len);
    if (r == NULL) return NULL;
    r->id = be32(frame + 4);
    r->len = len;
    struct reqinfo ri;
    if (parse_request(frame + HDR, len - HDR, &ri) == 0) {
        r->replayable = (uint8_t) is_replayable(&ri);
        if (ri.timeout_nano > 0) r->deadline = now_ns() + (uint64_t) ri.timeout_nano;
    }
    memcpy(r->frame, frame, len);
    struct req **at = &c->pending;
    while (*at && (*at)->id < r->id) at = &(*at)->next; /* ids increase: usually the walk ends at the tail */
    r->next = *at;
    *at = r;
    c->pending_bytes += len;
    return r;
}

/* Sends a pending request to the backend (B_UP), its timeout cut to what is left. Returns -1 if c died. */
static int send_request(struct conn *c, struct req *r, uint64_t now) {
    r->sent_at = now;
    r->sent_end = c->b_queued + r->len;
    if (r->deadline == 0) return send_to(c, 1, r->frame, r->len);
    size_t n = 0;
    uint8_t *f = with_timeout(r->frame, r->len, r->deadline - now, &n);
    if (f == NULL) return send_to(c, 1, r->frame, r->len);
    r->sent_end = c->b_queued + n;
    int rc = send_to(c, 1, f, n);
    free(f);
    return rc;
}

static void answered(struct conn *c, uint32_t id) {
    for (struct req **at = &c->pending; *at; at = &(*at)->next) {
        if ((*at)->id == id) {
            struct req *r = *at;
            *at = r->next;
            c->pending_bytes -= r->len;
            free(r);
            return;
        }
    }
}

/* The backend accepted the connection: replay what is unanswered, then what arrived meanwhile. */
static void back_up(struct conn *c) {
    c->state = B_UP;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = &c->hb};
    if (c->ev_back == 0) {
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->back, &ev) < 0) {
            back_failed(c, strerror(errno));
            return;
        }
        c->ev_back = ev.events;
    }
    c->b_queued = c->b_sent = 0;
    uint64_t now = now_ns();
    unsigned long n = 0, fresh = 0;
    for (struct req **at = &c->pending; *at;) {
        struct req *r = *at;
        if (r->deadline && now >= r->deadline) {
            if (refuse(c, at, r->in_flight ? WHY_EXPIRED : WHY_EXPIRED_UNSENT) < 0) return;
            continue;
        }
        if (send_request(c, r, now) < 0) return;
        if (c->state != B_UP) return; /* failed again (r may be gone): the replay starts over on the next one */
        if (r->in_flight) n++; else fresh++;
        at = &r->next;
    }
    if (c->state == B_UP && buf_size(&c->held) > 0) {
        if (send_to(c, 1, c->held.p + c->held.off, buf_size(&c->held)) < 0) return;
    }
    if (c->state != B_UP) return; /* failed again: the replay starts over on the next connection */
    buf_free(&c->held);
    if (c->failures > 0) {
        c->replays += n;
        logmsg("connection %lu: backend back; replayed %lu request(s), sent %lu that came while it was down", c->id, n,
               fresh);
    }
    if (over_cap(c)) kill_conn(c, "buffers over the limit");
}

static void try_connect(struct conn *c) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        schedule_retry(c, now_ms() + RETRY_MS);
        return;
    }
    c->back = fd;
    c->ev_back = 0;
    if (connect(fd, (struct sockaddr *) &back_addr, sizeof back_addr) == 0) {
        back_up(c);
        return;
    }
    if (errno == EINPROGRESS) {
        c->state = B_CONNECTING;
        struct epoll_event ev = {.events = EPOLLOUT | EPOLLRDHUP, .data.ptr = &c->hb};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0) {
            c->ev_back = ev.events;
            return;
        }
    }
    /* ENOENT, ECONNREFUSED (the JVM is down), EAGAIN (its backlog is full): later. */
    close(fd);
    c->back = -1;
    c->state = B_DOWN;
    schedule_retry(c, now_ms() + RETRY_MS);
}

/*
 * Handles the complete frames at the start of data[0, n) (and skips what is left of an oversized one); returns how
 * many bytes it used. The caller keeps the rest (a partial frame).
 */
static long frames_from_front(struct conn *c, const uint8_t *data, size_t n) {
    size_t done = 0;
    while (!c->dead) {
        if (c->skip > 0) {
            size_t k = n - done < c->skip ? n - done : (size_t) c->skip;
            c->skip -= k;
            done += k;
            if (c->skip > 0) break;
            continue;
        }
        if (n - done < HDR) break;
        const uint8_t *f = data + done;
        uint32_t len = be32(f);
        if (len > MAX_DATA) {
            /* As a ttrpc server does: answer that stream, drop its data, keep the connection (containerd would
             * never dial again). */
            char msg[128];
            snprintf(msg, sizeof msg, "message length %u exceeds maximum message size of %u", len, MAX_DATA);
            done += HDR;
            c->skip = len;
            if (reply_status(c, be32(f + 4), CODE_RESOURCE_EXHAUSTED, msg) < 0) return (long) n;
            continue;
        }
        if (n - done < HDR + len) break;
        size_t flen = HDR + len;
        if (f[8] == TYPE_REQUEST) {
            struct req *r = add_pending(c, f, flen);
            if (r == NULL) {
                kill_conn(c, "out of memory");
                return (long) n;
            }
            if (c->state == B_UP) {
                r->sent_at = now_ns();
                r->sent_end = c->b_queued + flen;
                if (send_to(c, 1, f, flen) < 0) return (long) n;
            }
        } else if (c->state == B_UP) {
            if (send_to(c, 1, f, flen) < 0) return (long) n;
        } else if (buf_append(&c->held, f, flen) < 0) {
            kill_conn(c, "out of memory");
            return (long) n;
        }
        done += flen;
    }
    return (long) done;
}

static long frames_from_back(struct conn *c, const uint8_t *data, size_t n) {
    size_t done = 0;
    while (!c->dead && n - done >= HDR) {
        const uint8_t *f = data + done;
        uint32_t len = be32(f);
        if (len > MAX_DATA) return -1;
        if (n - done < HDR + len) break;
        if (f[8] == TYPE_RESPONSE) answered(c, be32(f + 4));
        if (send_to(c, 0, f, HDR + len) < 0) return (long) n;
        done += HDR + len;
    }
    return (long) done;
}

/*
 * Handles n bytes read from one side: the complete frames now, the rest once it is complete. The fuzzer
 * (src/test/c/proxy-fuzz.c) drives the proxy through here.
 */
static void take_input(struct conn *c, int from_back, const uint8_t *data, size_t r) {
    struct buf *in = from_back ? &c->bin : &c->fin;
    long used;
    if (buf_size(in) == 0) {
        used = from_back ? frames_from_back(c, data, r) : frames_from_front(c, data, r);
        if (used >= 0 && !c->dead && (from_back ? c->state == B_UP : 1) && (size_t) used < r
            && buf_append(in, data + used, r - (size_t) used) < 0) {
            kill_conn(c, "out of memory");
        }
    } else {
        if (buf_append(in, data, r) < 0) {
            kill_conn(c, "out of memory");
            return;
        }
        used = from_back ? frames_from_back(c, in->p + in->off, buf_size(in))
                         : frames_from_front(c, in->p + in->off, buf_size(in));
        if (used >= 0 && !c->dead && (from_back ? c->state == B_UP : 1)) buf_consume(in, (size_t) used);
    }
    if (used < 0) {
        back_failed(c, "frame over 4 MiB"); /* only the backend's frames can be broken beyond repair */
        return;
    }
    if (!c->dead && over_cap(c)) kill_conn(c, "buffers over the limit");
}

/*
 * Reads once from one side and handles the complete frames. Returns 1 if it read something, 2 if there was nothing
 * to read, 0 at end of stream or on an error.
 */
static int read_side(struct conn *c, int from_back) {
    int fd = from_back ? c->back : c->front;
    ssize_t r = recv(fd, scratch, sizeof scratch, MSG_DONTWAIT);
    if (r < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 2 : 0;
    if (r == 0) return 0;
    take_input(c, from_back, scratch, (size_t) r);
    return 1;
}

static void on_front(struct conn *c, uint32_t events) {
    if (events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
        kill_conn(c, NULL); /* containerd closed it: its calls cannot be answered any more */
        return;
    }
    if ((events & EPOLLOUT) && flush(c, 0) < 0) return;
    if ((events & EPOLLIN) && !read_side(c, 0)) {
        kill_conn(c, NULL);
        return;
    }
    update_events(c);
}

static void on_back(struct conn *c, uint32_t events) {
    if (c->back < 0) return;
    if (c->state == B_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof err;
        if (getsockopt(c->back, SOL_SOCKET, SO_ERROR, &err, &l) < 0) err = errno;
        if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
            close_back_fd(c);
            c->state = B_DOWN;
            schedule_retry(c, now_ms() + RETRY_MS);
        } else {
            back_up(c);
        }
        update_events(c);
        return;
    }
    if ((events & EPOLLOUT) && flush(c, 1) < 0) return;
    if (events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
        /* Keep the responses it wrote before going away, whatever the backpressure: else they would be replayed. */
        while (!c->dead && c->state == B_UP && read_side(c, 1) == 1) {
        }
        back_failed(c, "connection closed");
    } else if ((events & EPOLLIN) && c->state == B_UP && !read_side(c, 1)) {
        back_failed(c, "connection closed");
    }
    update_events(c);
}

static int peer_is_us(int fd) {
    struct ucred cred;
    socklen_t l = sizeof cred;
    return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &l) == 0 && cred.uid == geteuid();
}

static void on_listen(void) {
    for (int i = 0; i < 64; i++) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                logmsg("accept: %s; pausing for %d ms", strerror(errno), RETRY_MS);
                epoll_ctl(ep, EPOLL_CTL_DEL, listen_fd, NULL);
                listen_paused_until = now_ms() + RETRY_MS;
            }
            return;
        }
        if (!peer_is_us(fd)) {
            logmsg("rejected a connection from another user");
            close(fd);
            continue;
        }
        struct conn *c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->id = next_conn_id++;
        c->front = fd;
        c->back = -1;
        c->hf = (struct handle) {K_FRONT, c};
        c->hb = (struct handle) {K_BACK, c};
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = &c->hf};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
            continue;
        }
        c->ev_front = ev.events;
        c->next = conns;
        if (conns) conns->prev = c;
        conns = c;
        try_connect(c);
        update_events(c);
    }
}

static void retry_due(void) {
    uint64_t now = now_ms();
    if (listen_paused_until && now >= listen_paused_until) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listen_handle};
        epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev);
        listen_paused_until = 0;
    }
    if (next_retry == 0 || now < next_retry) return;
    next_retry = 0;
    for (struct conn *c = conns, *nx; c; c = nx) {
        nx = c->next;
        if (c->state != B_DOWN) continue;
        if (c->retry_at <= now) {
            try_connect(c);
            if (!c->dead) update_events(c);
        } else if (next_retry == 0 || c->retry_at < next_retry) {
            next_retry = c->retry_at;
        }
    }
}

static int wait_timeout(void) {
    uint64_t at = next_retry;
    if (listen_paused_until && (at == 0 || listen_paused_until < at)) at = listen_paused_until;
    if (at == 0) return -1;
    uint64_t now = now_ms();
    return at <= now ? 0 : (int) (at - now);
}

/* ---- start-up ---- */

static void open_log(void) {
    int fd = open(log_path ? log_path : "/dev/null", O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) return;
    dup2(fd, 2);
    close(fd);
}

static int read_pid_fd(int fd) {
    char s[32];
    ssize_t n = pread(fd, s, sizeof s - 1, 0);
    if (n <= 0) return 0;
    s[n] = 0;
    return atoi(s);
}

/* Whether pid is a kuasar-ttrpc-proxy started with --listen front_path. */
static int is_live_proxy(int pid) {
    if (pid <= 0 || pid == getpid()) return 0;
    char path[64], comm[32];
    snprintf(path, sizeof path, "/proc/%d/comm", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, comm, sizeof comm - 1);
    close(fd);
    if (n <= 0) return 0;
    comm[n] = 0;
    if (strcmp(comm, PROC_NAME "\n") != 0) return 0;
    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    static char cmd[8192];
    n = read(fd, cmd, sizeof cmd - 1);
    close(fd);
    if (n <= 0) return 0;
    cmd[n] = 0;
    for (char *a = cmd; a < cmd + n; a += strlen(a) + 1) {
        if (strcmp(a, "--listen") == 0 && a + strlen(a) + 1 < cmd + n) return strcmp(a + strlen(a) + 1, front_path) == 0;
    }
    return 0;
}

static int fill_addr(struct sockaddr_un *a, const char *path) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a->sun_path) return -1;
    strcpy(a->sun_path, path);
    return 0;
}

static int front_is_served(const struct sockaddr_un *a) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    int ok = connect(fd, (const struct sockaddr *) a, sizeof *a) == 0;
    close(fd);
    return ok;
}

static void close_inherited_fds(void) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3, ~0U, 0) == 0) return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536) max = 65536;
    for (int fd = 3; fd < max; fd++) close(fd);
}

static void usage(void) {
    fprintf(stderr, "usage: kuasar-ttrpc-proxy --listen FRONT.sock --backend BACK.sock [--pid-file PATH] [--log PATH]"
                    " [--daemon] [--max-conn-bytes N] [--strike-window-ms N]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *pid_file = NULL;
    int daemonize = 0;
    set_strike_window(10000);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) front_path = argv[++i];
        else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) back_path = argv[++i];
        else if (strcmp(argv[i], "--pid-file") == 0 && i + 1 < argc) pid_file = argv[++i];
        else if (strcmp(argv[i], "--log") == 0 && i + 1 < argc) log_path = argv[++i];
        else if (strcmp(argv[i], "--max-conn-bytes") == 0 && i + 1 < argc) max_conn_bytes = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--strike-window-ms") == 0 && i + 1 < argc) set_strike_window(strtoull(argv[++i], NULL, 10));
        else if (strcmp(argv[i], "--daemon") == 0) daemonize = 1;
        else usage();
    }
    if (front_path == NULL || back_path == NULL || max_conn_bytes < 2 * (HDR + MAX_DATA)) usage();
    if (daemonize && (front_path[0] != '/' || back_path[0] != '/' || (pid_file && pid_file[0] != '/')
                      || (log_path && log_path[0] != '/'))) {
        fprintf(stderr, "kuasar-ttrpc-proxy: --daemon needs absolute paths (it changes to /)\n");
        return 2;
    }
    struct sockaddr_un front_addr;
    if (fill_addr(&front_addr, front_path) < 0 || fill_addr(&back_addr, back_path) < 0) {
        fprintf(stderr, "kuasar-ttrpc-proxy: socket path too long\n");
        return 2;
    }
    if (daemonize) close_inherited_fds();
    signal(SIGPIPE, SIG_IGN);

    /* The pid file's lock is held for the daemon's lifetime (the forks share it): one proxy per pid file. */
    int pid_fd = -1;
    if (pid_file) {
        pid_fd = open(pid_file, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (pid_fd < 0) {
            fprintf(stderr, "kuasar-ttrpc-proxy: %s: %s\n", pid_file, strerror(errno));
            return 1;
        }
        int other = read_pid_fd(pid_fd);
        if (flock(pid_fd, LOCK_EX | LOCK_NB) < 0) {
            printf("kuasar-ttrpc-proxy: already running (pid %d)\n", other);
            return 0;
        }
        if (is_live_proxy(other)) {
            printf("kuasar-ttrpc-proxy: already running (pid %d)\n", other);
            return 0;
        }
    }
    if (front_is_served(&front_addr)) {
        printf("kuasar-ttrpc-proxy: already running (%s accepts connections)\n", front_path);
        return 0;
    }

    int ready[2] = {-1, -1};
    if (daemonize) {
        fflush(stdout);
        if (pipe2(ready, O_CLOEXEC) < 0) {
            perror("kuasar-ttrpc-proxy: pipe");
            return 1;
        }
        pid_t child = fork();
        if (child < 0) {
            perror("kuasar-ttrpc-proxy: fork");
            return 1;
        }
        if (child > 0) {
            close(ready[1]);
            int pid = -1;
            ssize_t n;
            while ((n = read(ready[0], &pid, sizeof pid)) < 0 && errno == EINTR) {
            }
            while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
            }
            if (n != (ssize_t) sizeof pid || pid <= 0) return 1; /* the daemon said why on stderr */
            printf("kuasar-ttrpc-proxy: started (pid %d)\n", pid);
            return 0;
        }
        close(ready[0]);
        setsid();
        pid_t daemon = fork();
        if (daemon < 0) _exit(1);
        if (daemon > 0) _exit(0);
        if (chdir("/") < 0) { /* harmless */ }
    }
    prctl(PR_SET_NAME, PROC_NAME, 0, 0, 0);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    ep = epoll_create1(EPOLL_CLOEXEC);
    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (sig_fd < 0 || ep < 0 || listen_fd < 0) {
        fprintf(stderr, "kuasar-ttrpc-proxy: setup: %s\n", strerror(errno));
        return 1;
    }
    unlink(front_path); /* stale: nobody accepts on it (checked above) */
    mode_t old = umask(0077);
    int bound = bind(listen_fd, (struct sockaddr *) &front_addr, sizeof front_addr);
    umask(old);
    if (bound < 0 || listen(listen_fd, 1024) < 0) {
        fprintf(stderr, "kuasar-ttrpc-proxy: listen on %s: %s\n", front_path, strerror(errno));
        return 1;
    }
    struct stat front_st;
    stat(front_path, &front_st);
    static struct handle sh = {K_SIGNAL, NULL};
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listen_handle};
    epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev);
    ev.data.ptr = &sh;
    epoll_ctl(ep, EPOLL_CTL_ADD, sig_fd, &ev);

    if (pid_fd >= 0) {
        char s[32];
        int n = snprintf(s, sizeof s, "%d\n", (int) getpid());
        if (ftruncate(pid_fd, 0) < 0 || pwrite(pid_fd, s, n, 0) != n) {
            fprintf(stderr, "kuasar-ttrpc-proxy: %s: %s\n", pid_file, strerror(errno));
            unlink(front_path);
            return 1;
        }
    }
    if (daemonize) {
        int pid = getpid();
        if (write(ready[1], &pid, sizeof pid) < 0) { /* the launcher reports failure */ }
        close(ready[1]);
        int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
            close(devnull);
        }
        open_log();
    } else if (log_path) {
        open_log();
    }
    logmsg("listening on %s, backend %s", front_path, back_path);

    struct epoll_event events[MAX_EVENTS];
    int stop = 0;
    while (!stop) {
        int n = epoll_wait(ep, events, MAX_EVENTS, wait_timeout());
        if (n < 0 && errno != EINTR) {
            logmsg("epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            struct handle *h = events[i].data.ptr;
            switch (h->kind) {
                case K_LISTEN:
                    on_listen();
                    break;
                case K_SIGNAL: {
                    struct signalfd_siginfo si;
                    while (read(sig_fd, &si, sizeof si) == (ssize_t) sizeof si) {
                        if (si.ssi_signo == SIGHUP) {
                            if (log_path) open_log();
                        } else {
                            logmsg("signal %u: exiting", si.ssi_signo);
                            stop = 1;
                        }
                    }
                    break;
                }
                case K_FRONT:
                    if (!h->c->dead) on_front(h->c, events[i].events);
                    break;
                case K_BACK:
                    if (!h->c->dead) on_back(h->c, events[i].events);
                    break;
            }
        }
        retry_due();
        bury_dead();
    }

    while (conns) kill_conn(conns, NULL);
    bury_dead();
    close(listen_fd);
    struct stat st;
    if (stat(front_path, &st) == 0 && st.st_ino == front_st.st_ino && st.st_dev == front_st.st_dev) unlink(front_path);
    if (pid_fd >= 0) {
        if (read_pid_fd(pid_fd) == getpid()) unlink(pid_file);
        close(pid_fd);
    }
    close(sig_fd);
    close(ep);
    return 0;
}
