/*
 * queue-floor - the floor of one submission, for bench/postern_bench/queue.py.
 *
 * Usage: queue-floor DIR < message     (or queue-floor -n: exec only)
 *        queue-floor -m PROGRAM ARGS... < message
 *
 * Reads the message from standard input, writes it to a new file
 * DIR/tmp.<pid>, fsyncs it, renames it to DIR/<pid>.<n> and fsyncs DIR: the
 * durable write of a queue file that any submission must make, in the
 * smallest program that can make it (no envelope, no connection, no
 * configuration). With -n it reads the message and exits: the cost of
 * starting a small program. With -m it runs PROGRAM (message on its
 * standard input, its output discarded) and prints its peak RSS in kB
 * (wait4's ru_maxrss, which an exec keeps from the process before it: this
 * small process, not the benchmark driver). Exit status 0, or 1 with the
 * failing step on standard error (-m: 1 when PROGRAM fails).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int fail(const char *what) {
    perror(what);
    return 1;
}

static int peak_of(char **argv) {
    pid_t pid = fork();
    if (pid < 0)
        return fail("fork");
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null < 0 || dup2(null, 1) < 0)
            _exit(127);
        execv(argv[0], argv);
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0)
        return fail("wait4");
    printf("%ld\n", ru.ru_maxrss);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    static char buf[1 << 20];
    if (argc >= 3 && strcmp(argv[1], "-m") == 0)
        return peak_of(argv + 2);
    ssize_t n, len = 0;
    while ((n = read(0, buf + len, sizeof buf - len)) > 0)
        len += n;
    if (n < 0)
        return fail("read");
    if (argc == 2 && strcmp(argv[1], "-n") == 0)
        return 0;
    if (argc != 2) {
        fprintf(stderr, "usage: queue-floor DIR | -n\n");
        return 64;
    }
    char tmp[4096], dst[4096];
    snprintf(tmp, sizeof tmp, "%s/tmp.%d", argv[1], (int)getpid());
    snprintf(dst, sizeof dst, "%s/%d.%ld", argv[1], (int)getpid(), (long)len);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail("open");
    if (write(fd, buf, len) != len)
        return fail("write");
    if (fsync(fd) != 0)
        return fail("fsync");
    if (close(fd) != 0)
        return fail("close");
    if (rename(tmp, dst) != 0)
        return fail("rename");
    int dfd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0)
        return fail("fsync of the directory");
    return 0;
}
