/*
 * kuasar-monitor: keeps the exit status of one container process, whatever happens to runc-sandboxer.
 *
 *   kuasar-monitor --pid-file PATH --exit-file PATH -- RUNC_ARGS...
 *
 * Runs `runc create` / `runc exec --detach` (RUNC_ARGS) as a child subreaper, so the container process that runc
 * leaves behind becomes the monitor's child. The launcher exits as soon as runc does, with runc's exit status, so
 * the caller sees runc's result. The monitor itself stays, detached, until the container process exits, then writes
 * "<status> <unix nanoseconds>\n" to the exit file (atomically: temp file + rename) at once. The status follows
 * the shell convention (128 + signal for a signal death); 255 if the process was not the monitor's child (it exited
 * before runc did and runc reaped it: its status is lost).
 *
 * It exits only once it has no child left. A container that shares the host PID namespace has no init of its own
 * to adopt its orphans: being a subreaper, the monitor adopts them, and must reap them all. If it left with orphans
 * still running, they would be re-parented to the daemon (a subreaper too), which does not reap them: zombies.
 *
 * The monitor writes its own pid to "<exit file>.pid" before the launcher returns: the daemon is a child subreaper,
 * so the monitor becomes its child when the launcher exits, and the daemon must reap it.
 *
 * Why: a JVM daemon that is killed and restarted is no longer the parent of the containers it started, and only a
 * parent learns an exit status. This is conmon's job in CRI-O; here it is ~150 lines and ~50 KB of memory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int status_code(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 255;
}

static int read_pid(const char *path) {
    for (int attempt = 0; attempt < 50; attempt++) {
        FILE *f = fopen(path, "r");
        if (f != NULL) {
            int pid = 0;
            int n = fscanf(f, "%d", &pid);
            fclose(f);
            if (n == 1 && pid > 0) return pid;
        }
        usleep(10000);
    }
    return -1;
}

static void write_exit(const char *path, int code) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int) sizeof tmp) return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return;
    char line[64];
    int len = snprintf(line, sizeof line, "%d %lld\n", code,
                       (long long) now.tv_sec * 1000000000LL + now.tv_nsec);
    if (write(fd, line, len) == len && fsync(fd) == 0) {
        close(fd);
        rename(tmp, path);
    } else {
        close(fd);
        unlink(tmp);
    }
}

int main(int argc, char **argv) {
    const char *pid_file = NULL, *exit_file = NULL;
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--pid-file") == 0 && i + 1 < argc) {
            pid_file = argv[++i];
        } else if (strcmp(argv[i], "--exit-file") == 0 && i + 1 < argc) {
            exit_file = argv[++i];
        } else if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else {
            break;
        }
    }
    if (pid_file == NULL || exit_file == NULL || i >= argc) {
        fprintf(stderr, "usage: kuasar-monitor --pid-file PATH --exit-file PATH -- COMMAND...\n");
        return 2;
    }
    char **cmd = &argv[i];

    int sync[2];
    if (pipe2(sync, O_CLOEXEC) < 0) {
        perror("kuasar-monitor: pipe");
        return 1;
    }
    pid_t monitor = fork();
    if (monitor < 0) {
        perror("kuasar-monitor: fork");
        return 1;
    }
    if (monitor > 0) {
        /* The launcher: report runc's status, then leave the monitor behind. */
        close(sync[1]);
        int code = 255;
        if (read(sync[0], &code, sizeof code) != (ssize_t) sizeof code) code = 255;
        return code;
    }

    close(sync[0]);
    setsid();
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    prctl(PR_SET_NAME, "kuasar-monitor", 0, 0, 0);
    signal(SIGPIPE, SIG_IGN);
    pid_t runc = fork();
    if (runc < 0) {
        int code = 255;
        if (write(sync[1], &code, sizeof code) < 0) { /* the launcher reports 255 anyway */ }
        _exit(1);
    }
    if (runc == 0) {
        execvp(cmd[0], cmd);
        fprintf(stderr, "kuasar-monitor: cannot run %s: %s\n", cmd[0], strerror(errno));
        _exit(127);
    }
    int status = 0, code;
    for (;;) {
        pid_t p = waitpid(runc, &status, 0);
        if (p == runc) {
            code = status_code(status);
            break;
        }
        if (p < 0 && errno == EINTR) continue;
        code = 255; /* cannot happen (runc is our child): report a failure rather than read a stale status */
        break;
    }
    int target = code == 0 ? read_pid(pid_file) : -1;
    if (code == 0) {
        char mpath[4096];
        if (snprintf(mpath, sizeof mpath, "%s.pid", exit_file) < (int) sizeof mpath) {
            FILE *mf = fopen(mpath, "w");
            if (mf != NULL) {
                fprintf(mf, "%d\n", (int) getpid());
                fclose(mf);
            }
        }
    }
    if (code == 0 && target < 0) code = 255; /* runc succeeded but wrote no pid: nothing to monitor */
    if (write(sync[1], &code, sizeof code) < 0) { /* the launcher reports 255 anyway */ }
    close(sync[1]);

    /* Let go of the container's stdio: the container holds it; we must not keep FIFOs or terminals open. */
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        if (devnull > 2) close(devnull);
    }
    /* runc has exited, so the container process, if it is ours, has already been re-parented to us. If it is not
     * (it exited before runc did, and runc reaped it), its status is lost: say so now, not after our orphans. */
    int recorded = code != 0; /* nothing to record when runc failed: only reap what it may have left */
    if (!recorded) {
        pid_t p;
        while ((p = waitpid(target, &status, WNOHANG)) < 0 && errno == EINTR) {
        }
        if (p == target || (p < 0 && errno == ECHILD)) {
            write_exit(exit_file, p == target ? status_code(status) : 255);
            recorded = 1;
        }
    }
    for (;;) {
        status = 0;
        pid_t p = waitpid(-1, &status, __WALL);
        if (p < 0) {
            if (errno == EINTR) continue;
            break; /* ECHILD: nobody left to reap (no other error is possible with these arguments) */
        }
        if (p == target && !recorded) {
            write_exit(exit_file, status_code(status));
            recorded = 1;
        }
    }
    if (!recorded) write_exit(exit_file, 255); /* the container process was never our child */
    return 0;
}
