/*
 * Fuzzes kuasar-ttrpc-proxy's frame handling: the real code (the proxy's source is included whole), one connection
 * whose front (containerd) and backend (the JVM) are socketpairs, driven by the input as a script of operations:
 *
 *   'F' len16 bytes   bytes arrive from the front (framing, ttrpc Request decoding, oversized frames, pending list)
 *   'B' len16 bytes   bytes arrive from the backend (responses, oversized backend frames)
 *   'X'               the backend dies (what is replayed, what is answered UNAVAILABLE)
 *   'U'               a new backend is up (the replay, timeouts rewritten to what is left)
 *   'D'               both peers read what they were sent (the proxy's queues drain)
 *
 * (any other byte is taken modulo 5; len16 is little-endian and clipped to what is left). Each input also goes
 * whole through the Request decoder and the timeout rewrite.
 *
 * Built two ways by sanitize.sh:
 *   clang -fsanitize=fuzzer,address,undefined: a libFuzzer target (its own main);
 *   gcc -fsanitize=address,undefined -DSTANDALONE: a deterministic driver that mutates built-in seeds
 *       (proxy-fuzz [-seconds N] [-seed N] [-write-seeds DIR]), for machines without clang.
 */
#define main proxy_main
#include "../../main/c/kuasar-ttrpc-proxy.c"
#undef main

static int inited;

static void init(void) {
    inited = 1;
    log_fd = -1;
    set_strike_window(10000);
    ep = epoll_create1(EPOLL_CLOEXEC);
    signal(SIGPIPE, SIG_IGN);
}

static void drain(int fd) {
    while (recv(fd, scratch, sizeof scratch, MSG_DONTWAIT) > 0) {
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!inited) init();

    /* The decoders on their own. */
    struct reqinfo ri;
    int valid = parse_request(data, size, &ri) == 0;
    if (valid) (void) is_replayable(&ri);
    if (size <= MAX_DATA) {
        uint8_t *frame = malloc(HDR + size);
        if (frame) {
            put_be32(frame, (uint32_t) size);
            put_be32(frame + 4, 1);
            frame[8] = TYPE_REQUEST;
            frame[9] = 0;
            memcpy(frame + HDR, data, size);
            size_t n = 0;
            uint8_t *rewritten = with_timeout(frame, HDR + size, 12345, &n);
            if (rewritten) {
                /* A Request stays the same Request, with the new timeout. */
                if (be32(rewritten) != n - HDR) abort();
                if (valid && (parse_request(rewritten + HDR, n - HDR, &ri) != 0 || ri.timeout_nano != 12345)) abort();
                free(rewritten);
            }
            free(frame);
        }
    }

    /* One connection, as on_listen sets it up. */
    int fp[2], bp[2] = {-1, -1};
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fp) < 0) abort();
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, bp) < 0) abort();
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) abort();
    c->id = next_conn_id++;
    c->front = fp[0];
    c->back = bp[0];
    c->hf = (struct handle) {K_FRONT, c};
    c->hb = (struct handle) {K_BACK, c};
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = &c->hf};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->front, &ev) < 0) abort();
    c->ev_front = ev.events;
    c->next = conns;
    if (conns) conns->prev = c;
    conns = c;
    back_up(c);
    int backends = 1;

    const uint8_t *p = data, *end = data + size;
    while (p < end && !c->dead) {
        uint8_t op = *p++;
        if (op != 'F' && op != 'B' && op != 'X' && op != 'U' && op != 'D') op = "FBXUD"[op % 5];
        if (op == 'F' || op == 'B') {
            size_t n = 0;
            if (end - p >= 2) {
                n = (size_t) p[0] | (size_t) p[1] << 8;
                p += 2;
            }
            if (n > (size_t) (end - p)) n = (size_t) (end - p);
            if (op == 'F') {
                take_input(c, 0, p, n);
            } else if (c->state == B_UP) {
                take_input(c, 1, p, n);
            }
            p += n;
        } else if (op == 'X') {
            if (c->state == B_UP) {
                back_failed(c, "fuzz");
                close(bp[1]);
                bp[1] = -1;
            }
        } else if (op == 'U') {
            if (c->state == B_DOWN && backends < 8) {
                int nb[2];
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, nb) < 0) abort();
                backends++;
                if (bp[1] >= 0) close(bp[1]); /* the old backend's end, if it was dropped for a broken frame */
                bp[1] = nb[1];
                c->back = nb[0];
                c->ev_back = 0;
                back_up(c);
            }
        } else {
            drain(fp[1]);
            if (bp[1] >= 0) drain(bp[1]);
            if (!c->dead && flush(c, 0) == 0 && !c->dead && c->state == B_UP) flush(c, 1);
        }
        if (!c->dead) update_events(c);
    }
    if (!c->dead) kill_conn(c, NULL);
    bury_dead();
    next_retry = 0;
    close(fp[1]);
    if (bp[1] >= 0) close(bp[1]);
    return 0;
}

#ifdef STANDALONE
/* ---- without libFuzzer: seeds, mutations, a time budget ---- */

static size_t put_frame(uint8_t *out, uint32_t id, uint8_t type, const uint8_t *d, size_t n) {
    put_be32(out, (uint32_t) n);
    put_be32(out + 4, id);
    out[8] = type;
    out[9] = 0;
    memcpy(out + HDR, d, n);
    return HDR + n;
}

static size_t put_str(uint8_t *out, int field, const char *s) {
    size_t n = 0, len = strlen(s);
    out[n++] = (uint8_t) (field << 3 | 2);
    n += pb_put_varint(out + n, len);
    memcpy(out + n, s, len);
    return n + len;
}

/* A ttrpc Request (protobuf) for containerd.task.v3.Task/method. */
static size_t put_request(uint8_t *out, const char *method, uint64_t timeout) {
    size_t n = put_str(out, 1, "containerd.task.v3.Task");
    n += put_str(out + n, 2, method);
    n += put_str(out + n, 3, "\x0a\x03" "abc");
    if (timeout) {
        out[n++] = 4 << 3;
        n += pb_put_varint(out + n, timeout);
    }
    n += put_str(out + n, 5, "\x0a\x01k\x12\x01v");
    return n;
}

/* An operation: op, then for F/B the 16-bit length and the bytes. */
static size_t put_op(uint8_t *out, char op, const uint8_t *d, size_t n) {
    out[0] = (uint8_t) op;
    if (op != 'F' && op != 'B') return 1;
    out[1] = (uint8_t) n;
    out[2] = (uint8_t) (n >> 8);
    memcpy(out + 3, d, n);
    return 3 + n;
}

#define SEED_MAX 4096
static uint8_t seeds[8][SEED_MAX];
static size_t seed_len[8];
static int n_seeds;

static void make_seeds(void) {
    uint8_t req[512], frame[600];
    size_t rl, fl, n;
    /* A Wait with a deadline and a Create in flight; the backend dies, comes back; a response. */
    n = 0;
    rl = put_request(req, "Wait", 5000000000ull);
    fl = put_frame(frame, 1, TYPE_REQUEST, req, rl);
    n += put_op(seeds[n_seeds] + n, 'F', frame, fl);
    rl = put_request(req, "Create", 0);
    fl = put_frame(frame, 3, TYPE_REQUEST, req, rl);
    n += put_op(seeds[n_seeds] + n, 'F', frame, fl);
    n += put_op(seeds[n_seeds] + n, 'D', NULL, 0);
    n += put_op(seeds[n_seeds] + n, 'X', NULL, 0);
    n += put_op(seeds[n_seeds] + n, 'U', NULL, 0);
    fl = put_frame(frame, 1, TYPE_RESPONSE, (const uint8_t *) "\x12\x02ok", 4);
    n += put_op(seeds[n_seeds] + n, 'B', frame, fl);
    n += put_op(seeds[n_seeds] + n, 'D', NULL, 0);
    seed_len[n_seeds++] = n;
    /* An oversized frame, its data, then a request. */
    n = 0;
    uint8_t big[HDR];
    put_be32(big, MAX_DATA + 1);
    put_be32(big + 4, 5);
    big[8] = TYPE_REQUEST;
    big[9] = 0;
    n += put_op(seeds[n_seeds] + n, 'F', big, HDR);
    uint8_t junk[1000];
    memset(junk, 'x', sizeof junk);
    n += put_op(seeds[n_seeds] + n, 'F', junk, sizeof junk);
    rl = put_request(req, "State", 1);
    fl = put_frame(frame, 7, TYPE_REQUEST, req, rl);
    n += put_op(seeds[n_seeds] + n, 'F', frame, fl);
    n += put_op(seeds[n_seeds] + n, 'D', NULL, 0);
    seed_len[n_seeds++] = n;
    /* Requests while the backend is down, a Data frame, a split frame. */
    n = 0;
    n += put_op(seeds[n_seeds] + n, 'X', NULL, 0);
    rl = put_request(req, "Pids", 0);
    fl = put_frame(frame, 9, TYPE_REQUEST, req, rl);
    n += put_op(seeds[n_seeds] + n, 'F', frame, 7);
    n += put_op(seeds[n_seeds] + n, 'F', frame + 7, fl - 7);
    fl = put_frame(frame, 9, 3, (const uint8_t *) "data", 4);
    n += put_op(seeds[n_seeds] + n, 'F', frame, fl);
    n += put_op(seeds[n_seeds] + n, 'U', NULL, 0);
    n += put_op(seeds[n_seeds] + n, 'D', NULL, 0);
    seed_len[n_seeds++] = n;
}

static uint64_t rng;

static uint64_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static size_t mutate(uint8_t *buf, size_t n, size_t cap) {
    int rounds = 1 + (int) (next_rand() % 8);
    for (int i = 0; i < rounds; i++) {
        size_t at = n ? next_rand() % n : 0;
        switch (next_rand() % 8) {
            case 0: /* flip a bit */
                if (n) buf[at] ^= (uint8_t) (1u << (next_rand() % 8));
                break;
            case 1: /* a random byte */
                if (n) buf[at] = (uint8_t) next_rand();
                break;
            case 2: /* an interesting byte: varint ends, frame types, ops */
                if (n) buf[at] = (const uint8_t[]) {0, 1, 2, 3, 0x7f, 0x80, 0xff, 'F', 'B', 'X', 'U', 'D'}[next_rand() % 12];
                break;
            case 3: /* an interesting 32-bit value, as a frame length or stream id */
                if (n >= 4 && at + 4 <= n) {
                    const uint32_t v[] = {0, 1, 9, 10, MAX_DATA, MAX_DATA + 1, 0x7fffffff, 0xffffffff};
                    put_be32(buf + at, v[next_rand() % 8]);
                }
                break;
            case 4: /* insert bytes */
                if (n < cap) {
                    size_t k = 1 + next_rand() % 16;
                    if (k > cap - n) k = cap - n;
                    memmove(buf + at + k, buf + at, n - at);
                    for (size_t j = 0; j < k; j++) buf[at + j] = (uint8_t) next_rand();
                    n += k;
                }
                break;
            case 5: /* delete bytes */
                if (n) {
                    size_t k = 1 + next_rand() % 16;
                    if (k > n - at) k = n - at;
                    memmove(buf + at, buf + at + k, n - at - k);
                    n -= k;
                }
                break;
            case 6: /* duplicate a stretch */
                if (n && n < cap) {
                    size_t k = 1 + next_rand() % 64;
                    if (k > n - at) k = n - at;
                    if (k > cap - n) k = cap - n;
                    memmove(buf + at + k, buf + at, n - at);
                    n += k;
                }
                break;
            default: /* splice in another seed */
                if (n_seeds) {
                    int s = (int) (next_rand() % (unsigned) n_seeds);
                    size_t from = seed_len[s] ? next_rand() % seed_len[s] : 0;
                    size_t k = seed_len[s] - from;
                    if (k > cap - at) k = cap - at;
                    memcpy(buf + at, seeds[s] + from, k);
                    if (at + k > n) n = at + k;
                }
                break;
        }
    }
    return n;
}

int main(int argc, char **argv) {
    long seconds = 10;
    uint64_t seed = 1;
    const char *write_seeds = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-seconds") == 0 && i + 1 < argc) seconds = atol(argv[++i]);
        else if (strcmp(argv[i], "-seed") == 0 && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "-write-seeds") == 0 && i + 1 < argc) write_seeds = argv[++i];
        else {
            fprintf(stderr, "usage: proxy-fuzz [-seconds N] [-seed N] [-write-seeds DIR]\n");
            return 2;
        }
    }
    make_seeds();
    if (write_seeds) {
        for (int i = 0; i < n_seeds; i++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/seed-%d", write_seeds, i);
            FILE *f = fopen(path, "wb");
            if (f == NULL || fwrite(seeds[i], 1, seed_len[i], f) != seed_len[i]) {
                perror(path);
                return 1;
            }
            fclose(f);
        }
        return 0;
    }
    rng = seed * 0x9e3779b97f4a7c15ull | 1;
    static uint8_t buf[2 * SEED_MAX];
    unsigned long runs = 0;
    uint64_t until = now_ms() + (uint64_t) seconds * 1000;
    for (int i = 0; i < n_seeds; i++) LLVMFuzzerTestOneInput(seeds[i], seed_len[i]);
    while (now_ms() < until) {
        int s = (int) (next_rand() % (unsigned) n_seeds);
        memcpy(buf, seeds[s], seed_len[s]);
        size_t n = mutate(buf, seed_len[s], sizeof buf);
        for (int k = 0; k < 16; k++) {
            LLVMFuzzerTestOneInput(buf, n);
            runs++;
            n = mutate(buf, n, sizeof buf);
        }
    }
    printf("proxy-fuzz: %lu inputs in %ld s (seed %llu), no crash\n", runs, seconds, (unsigned long long) seed);
    return 0;
}
#endif
