/*
 * containerd-shim-kuasar-<kind>-v1: the helper containerd 2.x resolves for runtime_type io.containerd.kuasar-<kind>.v1
 * (built once per sandboxer: -DKIND="runc", "vmm", "wasm", "quark"; -DRUNC_FEATURES=1 where containers run on runc).
 *
 * The sandboxer serves the Task API itself (containerd dials the address Controller.Start returned), so there is no
 * per-pod shim process. containerd still runs this binary, and when it cannot, it gives up the runtime's tasks
 * (on a restart of containerd it would delete their bundles and report the containers gone):
 *   -info      to learn the runtime's features (CRI enables recursive read-only mounts only if the OCI runtime's
 *              features list "rro"): reads the runtime options (a protobuf Any) on stdin, prints a
 *              containerd.types.RuntimeInfo on stdout, as containerd's runc shim does, with the output of
 *              `runc features` (runc from $KUASAR_RUNC, else from PATH) where the containers run on runc;
 *   delete     for every task bundle it finds without a live connection: answers an empty DeleteResponse (zero
 *              bytes of protobuf); the sandboxer owns the real cleanup;
 *   start      never for this runtime: explains the configuration error;
 *   -v         prints the version.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef KIND
#define KIND "runc"
#endif
#ifndef RUNC_FEATURES
#define RUNC_FEATURES 1
#endif
#define SHIM "containerd-shim-kuasar-" KIND "-v1"
#define NAME "io.containerd.kuasar-" KIND ".v1"
#define VERSION "0.1.0"
#define FEATURES_TYPE "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
#define MAX_INPUT (1 << 20)

/* A growable byte buffer for the protobuf encoding. */
struct buf {
    unsigned char *p;
    size_t len, cap;
};

static void put(struct buf *b, const void *data, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (p == NULL) {
            fprintf(stderr, SHIM ": out of memory\n");
            exit(1);
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void put_varint(struct buf *b, unsigned long long v) {
    unsigned char c;
    do {
        c = v & 0x7f;
        v >>= 7;
        if (v) c |= 0x80;
        put(b, &c, 1);
    } while (v);
}

/* A length-delimited field (wire type 2): strings, bytes, embedded messages. */
static void put_field(struct buf *b, int field, const void *data, size_t n) {
    put_varint(b, ((unsigned long long) field << 3) | 2);
    put_varint(b, n);
    put(b, data, n);
}

/* Reads all of fd (up to max bytes); returns the count, or -1 if there is more than max. */
static ssize_t read_all(int fd, struct buf *b, size_t max) {
    unsigned char chunk[8192];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (b->len + (size_t) n > max) return -1;
        put(b, chunk, (size_t) n);
    }
    return (ssize_t) b->len;
}

/* `runc features` output, or an empty buffer if runc cannot tell (containerd then treats features as unknown). */
static void runc_features(struct buf *out) {
    const char *runc = getenv("KUASAR_RUNC");
    if (runc == NULL || runc[0] == '\0') runc = "runc";
    int pipefd[2];
    if (pipe(pipefd) < 0) return;
    pid_t pid = fork();
    if (pid < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return;
    }
    if (pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        close(pipefd[1]);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 2); /* containerd may read our stderr with stdout: keep runc's out of it */
        }
        execlp(runc, runc, "features", (char *) NULL);
        _exit(127);
    }
    close(pipefd[1]);
    ssize_t n = read_all(pipefd[0], out, MAX_INPUT);
    close(pipefd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (n < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) out->len = 0;
}

static int info(void) {
    struct buf options = {0}, features = {0}, version = {0}, any = {0}, msg = {0};
    if (read_all(0, &options, MAX_INPUT) < 0) {
        fprintf(stderr, SHIM ": runtime options on stdin exceed %d bytes\n", MAX_INPUT);
        return 1;
    }
    if (RUNC_FEATURES) runc_features(&features);
    put_field(&msg, 1, NAME, strlen(NAME));
    put_field(&version, 1, VERSION, strlen(VERSION));
    put_field(&msg, 2, version.p, version.len);
    if (options.len > 0) put_field(&msg, 3, options.p, options.len); /* the options as given, like the runc shim */
    if (features.len > 0) {
        put_field(&any, 1, FEATURES_TYPE, strlen(FEATURES_TYPE));
        put_field(&any, 2, features.p, features.len);
        put_field(&msg, 4, any.p, any.len);
    }
    size_t off = 0;
    while (off < msg.len) {
        ssize_t n = write(1, msg.p + off, msg.len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 1;
        off += (size_t) n;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *action = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0 || strcmp(a, "-version") == 0) {
            printf(SHIM " (Kuasar Java) %s\n", VERSION);
            return 0;
        }
        if (strcmp(a, "-info") == 0 || strcmp(a, "--info") == 0) return info();
        if (strcmp(a, "start") == 0 || strcmp(a, "delete") == 0) action = a;
    }
    if (action != NULL && strcmp(action, "delete") == 0) return 0;
    if (action != NULL && strcmp(action, "start") == 0) {
        fprintf(stderr, SHIM ": tasks of this runtime are served by " KIND "-sandboxer through the Sandbox API; "
                        "set sandboxer = \"" KIND "\" for this runtime in containerd's CRI config\n");
        return 1;
    }
    fprintf(stderr, SHIM ": unsupported invocation:");
    for (int i = 1; i < argc; i++) fprintf(stderr, " %s", argv[i]);
    fprintf(stderr, "\n");
    return 1;
}
