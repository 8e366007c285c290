/* qemuser's binfmt_misc interpreter: a tiny static program the kernel runs for a foreign ELF.
 *
 * Why native: with the O and C flags the kernel refuses a second binfmt rewrite (the #! of a
 * Python script) and fails with ENOEXEC; and with F inside a chroot there is no Python at all.
 * So this reads what the kernel passed (AT_FLAGS bit 0 = P, AT_EXECFD = O), and when it runs
 * inside a chroot it steps out to the host's root through /proc/1/root (root only, /proc
 * mounted), keeping fds of the chroot's root and of the cwd. Then it executes "<own path>.py",
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

static int in_chroot(void)
{
    struct stat own, init;
    if (stat("/", &own) != 0)
        return 0;
    if (stat("/proc/1/root/", &init) != 0)
        return errno == ENOENT ? -1 : 0; /* no /proc: cannot tell; not allowed: not root */
    return own.st_dev != init.st_dev || own.st_ino != init.st_ino;
}

int main(int argc, char **argv, char **envp)
{
    char at_flags[32], execfd[32], rootfd[32], cwdfd[32];
    unsigned long flags = getauxval(AT_FLAGS);
    errno = 0;
    unsigned long fd = getauxval(AT_EXECFD);
    int have_fd = !(fd == 0 && errno == ENOENT);
    int root_fd = -1, cwd_fd = -1;

    int chrooted = in_chroot();
    if (chrooted) {
        if (chrooted < 0) {
            errno = ENOENT;
            die("inside a chroot without /proc (mount /proc in it)");
        }
        root_fd = open("/", O_RDONLY | O_DIRECTORY);
        cwd_fd = open(".", O_RDONLY | O_DIRECTORY);
        if (root_fd < 0 || cwd_fd < 0)
            die("cannot open the chroot's root or cwd");
        if (chroot("/proc/1/root") != 0 || chdir("/") != 0)
            die("cannot reach the host root (root and CAP_SYS_CHROOT needed)");
    }
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
