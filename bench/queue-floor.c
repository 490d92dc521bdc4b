/*
 * queue-floor - the floor of one submission, for bench/postern_bench/queue.py.
 *
 * Usage: queue-floor DIR < message     (or queue-floor -n: exec only)
 *        queue-floor -m PROGRAM ARGS... < message
 *        queue-floor -r COUNT WRITERS MAILDIR < message
 *
 * Reads the message from standard input, writes it to a new file
 * DIR/tmp.<pid>, fsyncs it, renames it to DIR/<pid>.<n> and fsyncs DIR: the
 * durable write of a queue file that any submission must make, in the
 * smallest program that can make it (no envelope, no connection, no
 * configuration). With -n it reads the message and exits: the cost of
 * starting a small program. With -m it runs PROGRAM (message on its
 * standard input, its output discarded) and prints its peak RSS in kB
 * (wait4's ru_maxrss, which an exec keeps from the process before it: this
 * small process, not the benchmark driver). With -r it is this disk's raw
 * rate of Maildir deliveries: WRITERS processes at once make COUNT in all,
 * each a new file in MAILDIR/tmp, written, fsynced, renamed into
 * MAILDIR/new, and new/ fsynced (what any durable Maildir delivery must do,
 * with no fork per delivery, no user switch, no connection). Exit status 0,
 * or 1 with the failing step on standard error (-m: 1 when PROGRAM fails).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
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

/* buf[0..len] written to the new file tmp, fsynced, renamed to dst, and
 * the directory dfd (dst's) fsynced: 0, or 1 with the failing step said. */
static int write_durably(const char *tmp, const char *dst, int dfd, const char *buf, ssize_t len) {
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
    if (fsync(dfd) != 0)
        return fail("fsync of the directory");
    return 0;
}

/* One writer of -r: `count` Maildir deliveries of buf[0..len]. */
static int raw_writer(const char *maildir, int writer, long count, const char *buf, ssize_t len) {
    char tmp[4096], dst[4096];
    snprintf(tmp, sizeof tmp, "%s/new", maildir);
    int dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return fail("open of new/");
    for (long i = 0; i < count; i++) {
        snprintf(tmp, sizeof tmp, "%s/tmp/%d.%ld", maildir, writer, i);
        snprintf(dst, sizeof dst, "%s/new/%d.%ld", maildir, writer, i);
        if (write_durably(tmp, dst, dfd, buf, len) != 0)
            return 1;
    }
    return 0;
}

static int raw(long count, int writers, const char *maildir, const char *buf, ssize_t len) {
    if (count < 1 || writers < 1 || writers > 64) {
        fprintf(stderr, "queue-floor -r: COUNT >= 1 and 1 <= WRITERS <= 64\n");
        return 64;
    }
    pid_t pids[64];
    int started = 0, failed = 0;
    for (int w = 0; w < writers; w++) {
        long share = count / writers + (w < count % writers ? 1 : 0);
        pids[w] = fork();
        if (pids[w] < 0) {
            failed = fail("fork");
            break; /* the writers started are still waited for */
        }
        if (pids[w] == 0)
            _exit(raw_writer(maildir, w, share, buf, len));
        started++;
    }
    for (int w = 0; w < started; w++) {
        int status;
        if (waitpid(pids[w], &status, 0) < 0)
            return fail("waitpid");
        failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    return failed ? 1 : 0;
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
    if (argc == 5 && strcmp(argv[1], "-r") == 0)
        return raw(atol(argv[2]), atoi(argv[3]), argv[4], buf, len);
    if (argc == 2 && strcmp(argv[1], "-n") == 0)
        return 0;
    if (argc != 2) {
        fprintf(stderr, "usage: queue-floor DIR | -n | -m PROGRAM ARGS... | -r COUNT WRITERS MAILDIR\n");
        return 64;
    }
    char tmp[4096], dst[4096];
    snprintf(tmp, sizeof tmp, "%s/tmp.%d", argv[1], (int)getpid());
    snprintf(dst, sizeof dst, "%s/%d.%ld", argv[1], (int)getpid(), (long)len);
    int dfd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return fail("open of the directory");
    return write_durably(tmp, dst, dfd, buf, len);
}
