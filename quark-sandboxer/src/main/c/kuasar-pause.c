/*
 * kuasar-pause: the first process of a gVisor pod (the sandbox's root container), run *inside* gVisor's app kernel.
 *
 * gVisor needs a root container to make a sandbox, and a Kuasar pod has no pause image: quark-sandboxer puts this
 * static binary alone into the root container's rootfs. It waits for signals and reaps whatever it inherits; SIGTERM
 * and SIGINT end it (and with it the sandbox).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_stop(int sig) {
    (void) sig;
    stop = 1;
}

static void on_child(int sig) {
    (void) sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    while (!stop) {
        pause();
    }
    return 0;
}
