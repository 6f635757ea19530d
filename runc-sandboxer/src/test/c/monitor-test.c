/*
 * Drives the real kuasar-monitor through what runc leaves behind, with a shell script standing in for runc (it
 * starts a detached "container" process, writes its pid to the pid file and exits, as `runc create`/`exec --detach`
 * do). The test is a child subreaper, like the daemon, so whatever the monitor leaves behind ends up here.
 *
 *   monitor-test MONITOR_BINARY WORK_DIR
 *
 * Prints one line per case and "N passed, N failed"; exits 1 if a case failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
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

static const char *monitor;
static const char *work;
static int passed, failed;
static char failure[512];

static void fail(const char *fmt, ...) {
    if (failure[0]) return; /* keep the first */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(failure, sizeof failure, fmt, ap);
    va_end(ap);
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

/* The first integer in a file, or -1 (also while it does not exist yet). */
static long read_long(const char *path) {
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    long v = -1;
    if (fscanf(f, "%ld", &v) != 1) v = -1;
    fclose(f);
    return v;
}

static long wait_for_long(const char *path, int timeout_ms) {
    long deadline = now_ms() + timeout_ms;
    long v;
    while ((v = read_long(path)) < 0 && now_ms() < deadline) pause_ms(5);
    return v;
}

/* 'R', 'S', 'Z', ... or 0 if there is no such process. */
static char proc_state(long pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : 0;
}

/* Waits for a child of ours to end; returns its wait status, or -1 on timeout. */
static int wait_child(pid_t pid, int timeout_ms) {
    long deadline = now_ms() + timeout_ms;
    for (;;) {
        int st = 0;
        pid_t p = waitpid(pid, &st, WNOHANG);
        if (p == pid) return st;
        if (p < 0 && errno != EINTR) return -1;
        if (now_ms() >= deadline) return -1;
        pause_ms(5);
    }
}

/*
 * Holds a stand-in container process until the stand-in runc has exited (and been reaped), as `runc create` holds
 * the real one at its exec FIFO. Without it a container that exits at once races the shell standing in for runc,
 * which may reap it first: its status is then lost (255), as designed, but not what the case tests.
 */
#define AFTER_RUNC "while kill -0 $RUNC 2>/dev/null; do sleep 0.01; done; "

struct run {
    char dir[512], pid_file[600], exit_file[600], orphan_file[600], monitor_pid_file[620];
    int launcher_code; /* the launcher's exit code: runc's status */
    long monitor_pid;
};

/* Runs the monitor with `sh -c SCRIPT runc PID_FILE ORPHAN_FILE` as runc; returns once the launcher has exited. */
static void start(struct run *r, const char *name, const char *script) {
    memset(r, 0, sizeof *r);
    snprintf(r->dir, sizeof r->dir, "%s/%s", work, name);
    mkdir(r->dir, 0700);
    snprintf(r->pid_file, sizeof r->pid_file, "%s/pid", r->dir);
    snprintf(r->exit_file, sizeof r->exit_file, "%s/init.exit", r->dir);
    snprintf(r->orphan_file, sizeof r->orphan_file, "%s/orphan", r->dir);
    snprintf(r->monitor_pid_file, sizeof r->monitor_pid_file, "%s.pid", r->exit_file);
    unlink(r->pid_file);
    unlink(r->exit_file);
    unlink(r->orphan_file);
    unlink(r->monitor_pid_file);
    char full[2048];
    snprintf(full, sizeof full, "RUNC=$$; export RUNC; %s", script);
    pid_t launcher = fork();
    if (launcher == 0) {
        execl(monitor, monitor, "--pid-file", r->pid_file, "--exit-file", r->exit_file, "--", "sh", "-c", full,
              "runc", r->pid_file, r->orphan_file, (char *) NULL);
        _exit(126);
    }
    int st = wait_child(launcher, 10000);
    r->launcher_code = st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r->monitor_pid = read_long(r->monitor_pid_file);
}

/* The status the monitor recorded, waiting up to timeout_ms for it; -1 if none. */
static long recorded(struct run *r, int timeout_ms) {
    return wait_for_long(r->exit_file, timeout_ms);
}

/* Our children, from /proc (pid and comm); returns how many. */
static int children(long *pids, char (*comms)[32], int max) {
    int n = 0;
    DIR *d = opendir("/proc");
    if (d == NULL) return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < max) {
        char path[300], buf[512];
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL) continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = 0;
        char *open = strchr(buf, '('), *close = strrchr(buf, ')');
        long ppid = 0;
        char state;
        if (!open || !close || sscanf(close + 1, " %c %ld", &state, &ppid) != 2 || ppid != (long) getpid()) continue;
        pids[n] = atol(e->d_name);
        snprintf(comms[n], sizeof comms[n], "%.*s", (int) (close - open - 1), open + 1);
        n++;
    }
    closedir(d);
    return n;
}

/*
 * Nothing may be left to us but the monitor itself (re-parented to us when the launcher exits; the daemon reaps it
 * the same way): whatever it adopted, it must reap.
 */
static void expect_no_children_left(void) {
    long pids[64];
    char comms[64][32];
    int n = children(pids, comms, 64);
    for (int i = 0; i < n; i++) {
        if (strcmp(comms[i], "kuasar-monitor") == 0) {
            if (wait_child((pid_t) pids[i], 5000) < 0) fail("monitor %ld did not exit", pids[i]);
            continue;
        }
        fail("process %ld (%s, state %c) was left to the monitor's parent", pids[i], comms[i], proc_state(pids[i]));
        kill((pid_t) pids[i], SIGKILL);
        wait_child((pid_t) pids[i], 5000);
    }
}

static void finish(const char *name) {
    /* Whatever a failed case left behind (and what that leaves in turn) must not leak into the next one. */
    for (long until = now_ms() + 1500; failure[0] && now_ms() < until; pause_ms(20)) {
        long pids[64];
        char comms[64][32];
        int n = children(pids, comms, 64);
        for (int i = 0; i < n; i++) {
            kill((pid_t) pids[i], SIGKILL);
            waitpid((pid_t) pids[i], NULL, 0);
        }
    }
    if (failure[0]) {
        printf("FAIL %s: %s\n", name, failure);
        failed++;
    } else {
        printf("ok   %s\n", name);
        passed++;
    }
    fflush(stdout);
    failure[0] = 0;
}

static void case_exit_code(void) {
    struct run r;
    start(&r, "exit-code", "sh -c '" AFTER_RUNC "exit 3' & echo $! > \"$1\"");
    if (r.launcher_code != 0) fail("launcher exited %d, want 0 (runc's status)", r.launcher_code);
    if (r.monitor_pid <= 0) fail("no monitor pid in %s", r.monitor_pid_file);
    long code = recorded(&r, 5000);
    if (code != 3) fail("recorded %ld, want 3", code);
    if (r.monitor_pid > 0 && wait_child(r.monitor_pid, 5000) != 0) fail("monitor did not exit 0");
    expect_no_children_left();
    finish("exit status of the container process");
}

static void case_signal(void) {
    struct run r;
    start(&r, "signal", "sleep 30 & echo $! > \"$1\"");
    long target = read_long(r.pid_file);
    if (target <= 0) fail("no container pid");
    else kill((pid_t) target, SIGTERM);
    long code = recorded(&r, 5000);
    if (code != 128 + SIGTERM) fail("recorded %ld, want %d", code, 128 + SIGTERM);
    if (r.monitor_pid > 0 && wait_child(r.monitor_pid, 5000) != 0) fail("monitor did not exit 0");
    expect_no_children_left();
    finish("a container process killed by SIGTERM is recorded as 143");
}

/* A host-PID container whose main process leaves a child behind: the child is re-parented to the monitor. */
static void case_orphan(void) {
    struct run r;
    start(&r, "orphan", "sh -c 'sleep 1 & echo $! > \"$1\"; " AFTER_RUNC "exit 3' main \"$2\" & echo $! > \"$1\"");
    long orphan = wait_for_long(r.orphan_file, 5000);
    long code = recorded(&r, 700); /* promptly: the orphan still sleeps */
    if (code != 3) fail("recorded %ld within 700 ms, want 3 (the main process's status, not the orphan's)", code);
    if (orphan <= 0) fail("the main process wrote no orphan pid");
    char state = orphan > 0 ? proc_state(orphan) : 0;
    if (code == 3 && orphan > 0 && state != 'S' && state != 'R') {
        fail("the orphan was not running any more when the status was recorded (state %c)", state ? state : '-');
    }
    /* The monitor stays until the orphan is gone, and reaps it. */
    int st = r.monitor_pid > 0 ? wait_child(r.monitor_pid, 5000) : -1;
    if (st != 0) fail("monitor did not exit 0 within 5 s (status %d)", st);
    if (orphan > 0 && proc_state(orphan) != 0) {
        fail("orphan %ld still exists after the monitor exited (state %c): not reaped by the monitor", orphan,
             proc_state(orphan));
    }
    expect_no_children_left();
    finish("a main process's orphan is reaped by the monitor, its status recorded at once");
}

/* Many orphans, some of which leave orphans of their own. */
static void case_many_orphans(void) {
    struct run r;
    start(&r, "many-orphans",
          "sh -c 'for i in 1 2 3 4 5 6 7 8; do sh -c \"sleep 0.$i & sleep 0.1\" & done; " AFTER_RUNC "exit 7' & echo $! > \"$1\"");
    long code = recorded(&r, 5000);
    if (code != 7) fail("recorded %ld, want 7", code);
    int st = r.monitor_pid > 0 ? wait_child(r.monitor_pid, 5000) : -1;
    if (st != 0) fail("monitor did not exit 0 within 5 s (status %d)", st);
    expect_no_children_left();
    finish("orphans of orphans are all reaped");
}

static void case_runc_fails(void) {
    struct run r;
    start(&r, "runc-fails", "exit 5");
    if (r.launcher_code != 5) fail("launcher exited %d, want runc's 5", r.launcher_code);
    if (read_long(r.exit_file) >= 0) fail("an exit file was written for a container that never started");
    expect_no_children_left();
    finish("runc's failure is the launcher's exit status");
}

static void case_no_pid_file(void) {
    struct run r;
    start(&r, "no-pid-file", "exit 0");
    if (r.launcher_code != 255) fail("launcher exited %d, want 255 (runc wrote no pid)", r.launcher_code);
    expect_no_children_left();
    finish("runc succeeding without a pid file is reported as 255");
}

/* The pid file names a process that is not the monitor's child (runc reaped it): status unknown, 255, at once. */
static void case_not_our_child(void) {
    struct run r;
    start(&r, "not-our-child", "sh -c 'sleep 1 & echo $! > \"$1\"' x \"$2\" & echo $$ > \"$1\"; wait");
    long code = recorded(&r, 700);
    if (code != 255) fail("recorded %ld within 700 ms, want 255", code);
    int st = r.monitor_pid > 0 ? wait_child(r.monitor_pid, 5000) : -1;
    if (st != 0) fail("monitor did not exit 0 within 5 s (status %d)", st);
    expect_no_children_left();
    finish("a container process that is not the monitor's child is recorded as 255");
}

static void case_usage(void) {
    pid_t p = fork();
    if (p == 0) {
        int devnull = open("/dev/null", 1);
        dup2(devnull, 2);
        execl(monitor, monitor, "--pid-file", "x", (char *) NULL);
        _exit(126);
    }
    int st = wait_child(p, 5000);
    if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 2) fail("bad usage did not exit 2");
    finish("usage error");
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: monitor-test MONITOR_BINARY WORK_DIR\n");
        return 2;
    }
    monitor = argv[1];
    work = argv[2];
    mkdir(work, 0700);
    /* Like the daemon: what the monitor leaves behind comes to us, and we can tell. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
        perror("prctl(PR_SET_CHILD_SUBREAPER)");
        return 2;
    }
    case_exit_code();
    case_signal();
    case_orphan();
    case_many_orphans();
    case_runc_fails();
    case_no_pid_file();
    case_not_our_child();
    case_usage();
    printf("monitor: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
