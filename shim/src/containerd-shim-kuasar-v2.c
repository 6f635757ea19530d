/*
 * containerd-shim-kuasar-<kind>-v2: what containerd 1.7 runs for runtime_type io.containerd.kuasar-<kind>.v2 with
 * sandbox_mode = "shim" (built once per sandboxer: -DKIND="runc", "vmm", "wasm", "quark").
 *
 * containerd 1.7 cannot talk to a sandboxer; it starts one shim per pod and drives the pod through the shim's
 * Sandbox API (containerd.runtime.sandbox.v1.Sandbox) and its containers through the shim's Task API. Here there is
 * no shim process: the <kind>-sandboxer daemon serves both services on its task socket for every pod, and this
 * launcher only tells containerd where that is (the 1:N model survives: no process per pod).
 *
 *   start   finds the daemon's shim endpoint, <sandboxer socket>.ttrpc (a link the daemon makes to its task socket),
 *           checks that it answers, writes its address into the bundle's `address` file (containerd reads it back
 *           for every container of the pod and after its own restart) and prints it. The sandboxer socket is
 *           $KUASAR_<KIND>_SANDBOXER_ADDRESS (e.g. KUASAR_RUNC_SANDBOXER_ADDRESS, in containerd's environment),
 *           else Kuasar's /run/<kind>-sandboxer.sock. containerd reads stdout and stderr together here: errors go
 *           to stderr and become containerd's error message.
 *   delete  when containerd closes a pod's (or a reloaded container's) connection: prints a DeleteResponse
 *           (exit 137, now) as Kuasar's shim does. The daemon owns the cleanup: ShutdownSandbox and Task.Delete
 *           have already run, and a container id must never take its pod down.
 *   -v      prints the version.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef KIND
#define KIND "runc"
#endif
#define SHIM "containerd-shim-kuasar-" KIND "-v2"
#define VERSION "0.1.0"

/* KUASAR_RUNC_SANDBOXER_ADDRESS for KIND "runc". */
static const char *env_name(void) {
    static char name[64];
    size_t n = 0;
    for (const char *p = "KUASAR_"; *p; p++) name[n++] = *p;
    for (const char *p = KIND; *p && n < 40; p++) name[n++] = (*p >= 'a' && *p <= 'z') ? (char) (*p - 32) : *p;
    for (const char *p = "_SANDBOXER_ADDRESS"; *p; p++) name[n++] = *p;
    name[n] = '\0';
    return name;
}

static void usage(FILE *to) {
    fprintf(to,
            "usage: " SHIM " [-namespace NS] [-address ADDR] [-publish-binary BIN] -id ID [-bundle DIR] [-debug] "
            "start|delete\n"
            "       " SHIM " -v\n"
            "containerd 1.7's launcher for " KIND "-sandboxer (runtime_type io.containerd.kuasar-" KIND ".v2,\n"
            "sandbox_mode \"shim\"): prints the address where the daemon serves the pod's shim Sandbox and Task\n"
            "APIs. The daemon's Sandbox API socket: $%s, else /run/" KIND "-sandboxer.sock.\n",
            env_name());
}

static const char *sandboxer_socket(void) {
    const char *v = getenv(env_name());
    if (v == NULL || v[0] == '\0') return "/run/" KIND "-sandboxer.sock";
    if (strncmp(v, "unix://", 7) == 0) v += 7;
    return v;
}

static int connectable(const char *path) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        errno = ENAMETOOLONG;
        return 0;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    int ok = connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0;
    int saved = errno;
    close(fd);
    errno = saved;
    return ok;
}

static int write_file(const char *path, const char *data) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int) sizeof tmp) return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    size_t len = strlen(data), off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            close(fd);
            unlink(tmp);
            return -1;
        }
        off += (size_t) w;
    }
    if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int start(void) {
    const char *sock = sandboxer_socket();
    char link[PATH_MAX], target[PATH_MAX], address[PATH_MAX + 8];
    if (snprintf(link, sizeof link, "%s.ttrpc", sock) >= (int) sizeof link) {
        fprintf(stderr, SHIM ": sandboxer socket path too long: %s\n", sock);
        return 1;
    }
    if (realpath(link, target) == NULL) {
        fprintf(stderr, SHIM ": " KIND "-sandboxer's shim endpoint %s: %s; start " KIND "-sandboxer --listen %s "
                        "(a daemon with its own Task API: for quark-sandboxer, --backend gvisor), or set "
                        "%s in containerd's environment to its --listen socket\n",
                link, strerror(errno), sock, env_name());
        return 1;
    }
    if (!connectable(target)) {
        fprintf(stderr, SHIM ": " KIND "-sandboxer does not answer on %s (%s, via %s): is it running?\n", target,
                strerror(errno), link);
        return 1;
    }
    snprintf(address, sizeof address, "unix://%s", target);
    /* containerd parses the file as it is: no trailing newline */
    if (write_file("address", address) < 0) {
        fprintf(stderr, SHIM ": cannot write the address file in the bundle: %s\n", strerror(errno));
        return 1;
    }
    fputs(address, stdout);
    return fflush(stdout) == 0 ? 0 : 1;
}

static void put_varint(unsigned char *b, size_t *n, unsigned long long v) {
    do {
        unsigned char c = v & 0x7f;
        v >>= 7;
        b[(*n)++] = v ? (unsigned char) (c | 0x80) : c;
    } while (v);
}

/* containerd.task.v2.DeleteResponse{pid 1: 0, exit_status 2: 137, exited_at 3: now}, protobuf on stdout. */
static int delete(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    unsigned char ts[32], msg[64];
    size_t t = 0, m = 0;
    ts[t++] = 0x08;
    put_varint(ts, &t, (unsigned long long) now.tv_sec);
    if (now.tv_nsec) {
        ts[t++] = 0x10;
        put_varint(ts, &t, (unsigned long long) now.tv_nsec);
    }
    msg[m++] = 0x10;
    put_varint(msg, &m, 137);
    msg[m++] = 0x1a;
    put_varint(msg, &m, t);
    memcpy(msg + m, ts, t);
    m += t;
    return fwrite(msg, 1, m, stdout) == m && fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    const char *action = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0 || strcmp(a, "-version") == 0) {
            printf(SHIM " (Kuasar Java) %s\n", VERSION);
            return 0;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "-help") == 0) {
            usage(stdout);
            return 0;
        }
        if (a[0] == '-') {
            /* Go's flag syntax: -name value or -name=value; -debug alone */
            const char *name = a + (a[1] == '-' ? 2 : 1);
            if (strchr(name, '=') == NULL && strcmp(name, "debug") != 0 && i + 1 < argc) i++;
            continue;
        }
        action = a;
    }
    if (action != NULL && strcmp(action, "start") == 0) return start();
    if (action != NULL && strcmp(action, "delete") == 0) return delete();
    fprintf(stderr, SHIM ": unsupported invocation:");
    for (int i = 1; i < argc; i++) fprintf(stderr, " %s", argv[i]);
    fprintf(stderr, "\n");
    usage(stderr);
    return 1;
}
