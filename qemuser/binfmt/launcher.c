/* qemuser's binfmt_misc interpreter: a tiny static program the kernel runs for a foreign ELF.
 *
 * Why native: with the O and C flags the kernel refuses a second binfmt rewrite (the #! of a
 * Python script) and fails with ENOEXEC; and with F inside a chroot there is no Python at all.
 * So this reads what the kernel passed (AT_FLAGS bit 0 = P, AT_EXECFD = O), and when it runs
 * inside a chroot it steps out to the host's root (see leave_chroot: root only), keeping fds of
 * the chroot's root and of the cwd. Then it executes "<own path>.py",
 * the Python interpreter script `qemuser-binfmt install` wrote next to it, as
 *   <script> --at-flags N --execfd N|-1 --root-fd N|-1 --cwd-fd N|-1 -- filename args...
 * The Python side imports everything, re-enters the chroot (fchdir + chroot + fchdir) and runs
 * the guest in this very process: same pid, fds, credentials, signals, exit status.
 *
 * Build: cc -O2 -static -o qemuser-binfmt-launcher launcher.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

static void die(const char *what)
{
    dprintf(2, "qemuser-binfmt: %s: %s\n", what, strerror(errno));
    _exit(126);
}

/* Step out of a chroot to the real root: chroot into a subdirectory while the cwd stays at the
 * old root (now outside the new one), climb with "..", then chroot there. Needs CAP_SYS_CHROOT
 * (root in the chroot: debootstrap, image builds) but no /proc. Returns 1 when we were in a
 * chroot (root_fd/cwd_fd then keep it), 0 when not (or not allowed to tell). */
static int leave_chroot(int *root_fd, int *cwd_fd)
{
    static const char *const subdirs[] = {"proc", "dev", "tmp", "bin", "usr", "etc", "lib"};
    struct stat old_root, new_root;
    if (geteuid() != 0)
        return 0;
    *root_fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    *cwd_fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*root_fd < 0 || *cwd_fd < 0 || fstat(*root_fd, &old_root) != 0 || chdir("/") != 0)
        die("cannot open the root or the working directory");
    size_t i;
    for (i = 0; i < sizeof subdirs / sizeof *subdirs; i++)
        if (chroot(subdirs[i]) == 0)
            break;
    if (i == sizeof subdirs / sizeof *subdirs) {
        if (fchdir(*cwd_fd) != 0)
            die("fchdir");
        close(*root_fd), close(*cwd_fd);
        return 0; /* no CAP_SYS_CHROOT: stay where we are */
    }
    for (int up = 0; up < 256; up++)
        if (chdir("..") != 0)
            die("chdir ..");
    if (chroot(".") != 0 || stat("/", &new_root) != 0)
        die("cannot reach the host root");
    if (new_root.st_dev == old_root.st_dev && new_root.st_ino == old_root.st_ino) {
        if (fchdir(*cwd_fd) != 0)
            die("fchdir");
        close(*root_fd), close(*cwd_fd);
        return 0; /* we were at the real root already */
    }
    /* the Python side needs these across its execve */
    fcntl(*root_fd, F_SETFD, 0);
    fcntl(*cwd_fd, F_SETFD, 0);
    return 1;
}

int main(int argc, char **argv, char **envp)
{
    char at_flags[32], execfd[32], rootfd[32], cwdfd[32];
    unsigned long flags = getauxval(AT_FLAGS);
    errno = 0;
    unsigned long fd = getauxval(AT_EXECFD);
    int have_fd = !(fd == 0 && errno == ENOENT);
    int root_fd = -1, cwd_fd = -1;

    if (!leave_chroot(&root_fd, &cwd_fd))
        root_fd = cwd_fd = -1;
    char script[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", script, sizeof script - 4);
    if (n < 0)
        die("readlink /proc/self/exe");
    memcpy(script + n, ".py", 4);

    snprintf(at_flags, sizeof at_flags, "%lu", flags);
    snprintf(execfd, sizeof execfd, "%ld", have_fd ? (long)fd : -1L);
    snprintf(rootfd, sizeof rootfd, "%d", root_fd);
    snprintf(cwdfd, sizeof cwdfd, "%d", cwd_fd);
    char **args = calloc((size_t)argc + 12, sizeof *args);
    if (!args)
        die("calloc");
    int i = 0;
    args[i++] = script;
    args[i++] = "--at-flags";
    args[i++] = at_flags;
    args[i++] = "--execfd";
    args[i++] = execfd;
    args[i++] = "--root-fd";
    args[i++] = rootfd;
    args[i++] = "--cwd-fd";
    args[i++] = cwdfd;
    args[i++] = "--";
    for (int j = 1; j < argc; j++)
        args[i++] = argv[j];
    args[i] = NULL;
    execve(script, args, envp);
    die(script);
    return 126;
}
