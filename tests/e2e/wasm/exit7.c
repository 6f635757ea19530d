/* exit7.wasm: prints a line, then exit(7). */
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    printf("exiting with 7\n");
    fflush(stdout);
    exit(7);
}
