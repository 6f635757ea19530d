/*
 * kuasar-holder: the namespace holder of one runc pod (Kuasar's pause-less "sandbox" process).
 *
 *   kuasar-holder [--netns PATH] [--hostname NAME] [--pid] [--host-ipc] [--sysctl PATH=VALUE]... ID
 *
 * Joins the pod network namespace given by containerd (CNI) if any, creates a fresh IPC namespace (unless
 * --host-ipc), a UTS namespace named NAME when --hostname is given (host-network pods keep the host's, as with
 * containerd's pause container), and a PID namespace with --pid (pods that share one); writes the pod's sysctls
 * (PATH relative to /proc/sys; /proc/sys shows the namespaces of the writer, so they land in the pod's); then forks
 * the holder itself and prints its pid on stdout.
 * The launcher exits at once, so the holder is re-parented to runc-sandboxer, a child subreaper, which learns its
 * exit status through a pidfd. Containers join the holder's namespaces through /proc/PID/ns.
 *
 * The holder does nothing but reap children: with --pid it is PID 1 of the pod's PID namespace, and orphans of
 * containers sharing that namespace are re-parented to it. SIGTERM/SIGINT end it cleanly.
 * A JVM cannot do this itself: unshare(CLONE_NEWPID) and fork are not available to a multi-threaded process.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "kuasar-holder: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void usage(void) {
    fprintf(stderr, "usage: kuasar-holder [--netns PATH] [--hostname NAME] [--pid] [--host-ipc] "
                    "[--sysctl PATH=VALUE]... ID\n");
    exit(2);
}

#define MAX_SYSCTLS 64

/* Writes one "path=value" below /proc/sys; the daemon has validated the name (no "..", namespaced keys only). */
static void write_sysctl(const char *setting) {
    const char *eq = strchr(setting, '=');
    if (eq == NULL || eq == setting || strstr(setting, "..") != NULL) {
        fprintf(stderr, "kuasar-holder: invalid sysctl %s\n", setting);
        exit(2);
    }
    char path[512];
    if (snprintf(path, sizeof path, "/proc/sys/%.*s", (int) (eq - setting), setting) >= (int) sizeof path) {
        fprintf(stderr, "kuasar-holder: sysctl name too long: %s\n", setting);
        exit(2);
    }
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "kuasar-holder: sysctl %.*s: %s\n", (int) (eq - setting), setting, strerror(errno));
        exit(1);
    }
    size_t len = strlen(eq + 1);
    if (write(fd, eq + 1, len) != (ssize_t) len) {
        fprintf(stderr, "kuasar-holder: sysctl %.*s=%s: %s\n", (int) (eq - setting), setting, eq + 1,
                strerror(errno));
        exit(1);
    }
    close(fd);
}

int main(int argc, char **argv) {
    const char *netns = NULL, *name = NULL, *hostname = NULL;
    int new_pid = 0, host_ipc = 0, nsysctls = 0;
    const char *sysctls[MAX_SYSCTLS];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--netns") == 0 && i + 1 < argc) {
            netns = argv[++i];
        } else if (strcmp(argv[i], "--hostname") == 0 && i + 1 < argc) {
            hostname = argv[++i];
        } else if (strcmp(argv[i], "--pid") == 0) {
            new_pid = 1;
        } else if (strcmp(argv[i], "--host-ipc") == 0) {
            host_ipc = 1;
        } else if (strcmp(argv[i], "--sysctl") == 0 && i + 1 < argc) {
            if (nsysctls == MAX_SYSCTLS) {
                fprintf(stderr, "kuasar-holder: more than %d sysctls\n", MAX_SYSCTLS);
                exit(2);
            }
            sysctls[nsysctls++] = argv[++i];
        } else if (argv[i][0] == '-') {
            usage();
        } else if (name == NULL) {
            name = argv[i];
        } else {
            usage();
        }
    }
    if (name == NULL) {
        usage();
    }
    if (netns != NULL && netns[0] != '\0') {
        int fd = open(netns, O_RDONLY | O_CLOEXEC);
        if (fd < 0) die("open netns");
        if (setns(fd, CLONE_NEWNET) < 0) die("setns(CLONE_NEWNET)");
        close(fd);
    }
    int flags = (host_ipc ? 0 : CLONE_NEWIPC) | (hostname ? CLONE_NEWUTS : 0) | (new_pid ? CLONE_NEWPID : 0);
    if (flags != 0 && unshare(flags) < 0) die("unshare");
    if (hostname != NULL && sethostname(hostname, strlen(hostname)) < 0) die("sethostname");
    for (int i = 0; i < nsysctls; i++) write_sysctl(sysctls[i]);

    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL); /* the holder takes signals through sigwait */

    /* Named before the fork (the child inherits it): the pid we print must already carry the name the daemon
     * checks to recognise its holder. */
    char comm[16];
    snprintf(comm, sizeof comm, "kuasar-%.8s", name);
    prctl(PR_SET_NAME, comm, 0, 0, 0);

    pid_t child = fork();
    if (child < 0) die("fork");
    if (child > 0) {
        printf("%d\n", (int) child);
        fflush(stdout);
        return 0;
    }

    setsid();
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        if (devnull > 2) close(devnull);
    }
    for (;;) {
        int sig;
        if (sigwait(&all, &sig) != 0) continue;
        if (sig == SIGCHLD) {
            while (waitpid(-1, NULL, WNOHANG) > 0) {
            }
        } else if (sig == SIGTERM || sig == SIGINT) {
            return 0;
        }
    }
}
