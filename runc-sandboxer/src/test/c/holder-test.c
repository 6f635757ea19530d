/*
 * Drives the real kuasar-holder: its namespaces, its name, reaping the orphans of its PID namespace, a clean
 * SIGTERM. Needs root (unshare); it changes nothing on the host (fresh IPC, UTS and PID namespaces, no network one).
 * The test is a child subreaper, like the daemon, so the holder becomes its child.
 *
 *   holder-test HOLDER_BINARY
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

static void pause_ms(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int wait_child(pid_t pid, int timeout_ms) {
    long deadline = now_ms() + timeout_ms;
    for (;;) {
        int st = 0;
        pid_t p = waitpid(pid, &st, WNOHANG);
        if (p == pid) return st;
        if ((p < 0 && errno != EINTR) || now_ms() >= deadline) return -1;
        pause_ms(5);
    }
}

/* How many children pid has (any state); zombies counted in *zombies. */
static int children_of(long pid, int *zombies) {
    int n = 0;
    *zombies = 0;
    DIR *d = opendir("/proc");
    if (d == NULL) return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[300], buf[512];
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL) continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = 0;
        char *close = strrchr(buf, ')');
        char state;
        long ppid;
        if (close && sscanf(close + 1, " %c %ld", &state, &ppid) == 2 && ppid == pid) {
            n++;
            if (state == 'Z') (*zombies)++;
        }
    }
    closedir(d);
    return n;
}

static int same_ns(long pid, const char *ns) {
    char a[64], b[64], la[128] = "", lb[128] = "";
    snprintf(a, sizeof a, "/proc/%ld/ns/%s", pid, ns);
    snprintf(b, sizeof b, "/proc/self/ns/%s", ns);
    if (readlink(a, la, sizeof la - 1) < 0 || readlink(b, lb, sizeof lb - 1) < 0) return -1;
    return strcmp(la, lb) == 0;
}

/* Runs a shell command, returns its first line of output. */
static void run(const char *cmd, char *out, size_t cap) {
    out[0] = 0;
    FILE *p = popen(cmd, "r");
    if (p == NULL) return;
    if (fgets(out, (int) cap, p) == NULL) out[0] = 0;
    out[strcspn(out, "\n")] = 0;
    pclose(p);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: holder-test HOLDER_BINARY\n");
        return 2;
    }
    const char *holder = argv[1];
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
        perror("prctl");
        return 2;
    }
    char cmd[4096], out[256];
    snprintf(cmd, sizeof cmd, "'%s' --hostname kuasar-sanitize --pid sanitize-test", holder);
    run(cmd, out, sizeof out);
    long pid = atol(out);
    check(pid > 0, "the launcher printed the holder's pid (%s)", out);
    if (pid <= 0) {
        printf("holder: %d passed, %d failed\n", passed, failed);
        return 1;
    }
    char path[64], comm[64] = "";
    snprintf(path, sizeof path, "/proc/%ld/comm", pid);
    FILE *f = fopen(path, "r");
    if (f && fgets(comm, sizeof comm, f)) comm[strcspn(comm, "\n")] = 0;
    if (f) fclose(f);
    check(strcmp(comm, "kuasar-sanitize") == 0, "named after its id, cut to 15 bytes (%s)", comm);
    check(same_ns(pid, "ipc") == 0, "its own IPC namespace");
    check(same_ns(pid, "uts") == 0, "its own UTS namespace");
    check(same_ns(pid, "pid") == 0, "its own PID namespace");
    check(same_ns(pid, "net") == 1, "the host's network namespace (no --netns)");
    snprintf(cmd, sizeof cmd, "nsenter -t %ld -u hostname", pid);
    run(cmd, out, sizeof out);
    check(strcmp(out, "kuasar-sanitize") == 0, "its hostname (%s)", out);

    /* Orphans in its PID namespace are re-parented to it (it is PID 1 there): it must reap them. */
    snprintf(cmd, sizeof cmd, "nsenter -t %ld -p -- sh -c 'sleep 0.3 & sleep 0.4 & exit 0'", pid);
    int zombies = 0;
    check(system(cmd) == 0, "ran a process that leaves two orphans in the pod's PID namespace");
    int adopted = children_of(pid, &zombies);
    check(adopted == 2, "the holder adopted them (%d children)", adopted);
    long deadline = now_ms() + 5000;
    while (children_of(pid, &zombies) > 0 && now_ms() < deadline) pause_ms(10);
    check(children_of(pid, &zombies) == 0, "it reaped them once they ended (%d left, %d zombies)",
          children_of(pid, &zombies), zombies);

    kill((pid_t) pid, SIGTERM);
    int st = wait_child((pid_t) pid, 10000);
    check(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM ends it with status 0 (wait status %d)", st);
    if (st < 0) {
        kill((pid_t) pid, SIGKILL);
        wait_child((pid_t) pid, 5000);
    }

    snprintf(cmd, sizeof cmd, "'%s' --bogus x 2>/dev/null", holder);
    int rc = system(cmd);
    check(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "bad usage exits 2");
    printf("holder: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
