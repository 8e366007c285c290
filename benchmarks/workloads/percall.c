/* System-call round trips for benchmarks/percall.py: `percall MODE N` makes N calls of one kind
 * and prints how many succeeded, so that both emulators can be checked to have done the same
 * work. The per-call cost is the slope between two values of N (start-up cancels out).
 *   getppid: N getppid() (the bare round trip: no arguments decoded, no memory touched);
 *   rw4k:    N read()s of 4 KiB from /dev/zero and N write()s of them to /dev/null;
 *   pipe:    N write()s of 4 KiB into a pipe, each read back at once. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char buf[4096];

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: percall getppid|rw4k|pipe N\n");
        return 2;
    }
    long n = atol(argv[2]), ok = 0;
    if (strcmp(argv[1], "getppid") == 0) {
        for (long i = 0; i < n; i++) ok += getppid() > 0;
    } else if (strcmp(argv[1], "rw4k") == 0) {
        int in = open("/dev/zero", O_RDONLY), out = open("/dev/null", O_WRONLY);
        if (in < 0 || out < 0) return 1;
        for (long i = 0; i < n; i++)
            ok += read(in, buf, sizeof buf) == sizeof buf && write(out, buf, sizeof buf) == sizeof buf;
    } else if (strcmp(argv[1], "pipe") == 0) {
        int fds[2];
        if (pipe(fds) != 0) return 1;
        for (long i = 0; i < n; i++)
            ok += write(fds[1], buf, sizeof buf) == sizeof buf && read(fds[0], buf, sizeof buf) == sizeof buf;
    } else {
        fprintf(stderr, "percall: unknown mode %s\n", argv[1]);
        return 2;
    }
    printf("%s %ld %ld\n", argv[1], n, ok);
    return ok == n ? 0 : 1;
}
