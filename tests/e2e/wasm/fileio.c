/*
 * fileio.wasm: file I/O on a preopened bind mount. Reads DIR/in.txt, writes its lines upper-cased to DIR/out.txt,
 * counts DIR's entries, and checks that ".." cannot leave the preopen. DIR is argv[1] (default /data).
 * Exits 0 on success, 2 when in.txt cannot be read, 3 when out.txt cannot be written, 4 when ".." escaped.
 */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "/data";
    char path[512];
    snprintf(path, sizeof path, "%s/in.txt", dir);
    FILE *in = fopen(path, "r");
    if (!in) {
        perror(path);
        return 2;
    }
    snprintf(path, sizeof path, "%s/out.txt", dir);
    FILE *out = fopen(path, "w");
    if (!out) {
        perror(path);
        return 3;
    }
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, in)) {
        for (char *c = line; *c; c++) {
            *c = (char) toupper((unsigned char) *c);
        }
        fputs(line, out);
        n++;
    }
    fclose(in);
    fclose(out);
    int entries = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            entries++;
        }
    }
    if (d) {
        closedir(d);
    }
    snprintf(path, sizeof path, "%s/../../etc/passwd", dir);
    FILE *escape = fopen(path, "r");
    printf("fileio: %d lines, %d entries, escape %s\n", n, entries, escape ? "POSSIBLE" : "blocked");
    return escape ? 4 : 0;
}
