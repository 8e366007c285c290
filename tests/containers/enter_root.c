/* What a container runtime does before it runs the container's first program, reduced to the
 * part binfmt_misc cares about: make ROOT the root of this (private) mount namespace with
 * pivot_root, detach the old root so that no host path is left, and exec PROGRAM there.
 *
 *   enter_root ROOT PROGRAM [ARG...]      (in a new mount namespace: unshare --mount ...)
 *
 * Static, so it needs nothing from ROOT once it is inside.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

static int fail(const char *what)
{
    fprintf(stderr, "enter_root: %s: %s\n", what, strerror(errno));
    return 125;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: enter_root ROOT PROGRAM [ARG...]\n");
        return 125;
    }
    /* nothing we do here may propagate back to the host's mounts */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        return fail("making / private");
    /* pivot_root wants a mount point: bind ROOT onto itself */
    if (mount(argv[1], argv[1], NULL, MS_BIND | MS_REC, NULL) != 0)
        return fail("bind-mounting the root");
    if (chdir(argv[1]) != 0)
        return fail("chdir to the root");
    /* pivot_root(".", "."): the old root is stacked on the new one, then detached (runc's way:
     * no directory for the old root is needed inside ROOT) */
    if (syscall(SYS_pivot_root, ".", ".") != 0)
        return fail("pivot_root");
    if (umount2(".", MNT_DETACH) != 0)
        return fail("detaching the old root");
    if (chdir("/") != 0)
        return fail("chdir /");
    execv(argv[2], argv + 2);
    return fail(argv[2]);
}
