/* hello-c.wasm: C through clang + wasi-libc. Prints its arguments and GREETING, one line to stderr, exits 0. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    printf("hello from C: argc=%d", argc);
    for (int i = 1; i < argc; i++) {
        printf(" [%s]", argv[i]);
    }
    const char *g = getenv("GREETING");
    printf(" GREETING=%s\n", g ? g : "(unset)");
    fprintf(stderr, "to-stderr\n");
    return 0;
}
