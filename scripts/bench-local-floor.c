/*
 * bench-local-floor - the floor of scripts/bench-local: what one delivery
 * costs on this machine when it is done the way postern-local must do it,
 * with nothing else around it.
 *
 * Usage: bench-local-floor -k mbox|maildir -d PATH -m MESSAGE -c COUNT -n USER
 *
 * For each of COUNT deliveries, one after the other: fork; the child drops
 * to USER (groups, then gid, then uid) and appends MESSAGE to the mbox file
 * PATH (after a "From " line, with a blank line after it) and fsyncs it,
 * or writes it to a new file in the Maildir PATH's tmp/,
 * fsyncs it, renames it into new/ and fsyncs new/; then it exits; the
 * parent waits for it. That is postern-local's mandatory work per delivery
 * (DESIGN.md: a fork per delivery, the user's own rights, an fsync of
 * everything that makes the delivery durable) without the handoff
 * connection, the request, the policy check, the mailbox checks or the lock.
 * A delivery agent cannot be faster than this on the same disk.
 *
 * Prints one line in postern-deliverbench's format:
 *   deliveries=N errors=E secs=S rate=R
 *
 * Exit status: 0 when every delivery succeeded, 1 on an error (reported on
 * stderr), 64 on bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *arg)
{
    fprintf(stderr, "bench-local-floor: %s%s%s: %s\n", what, arg ? " " : "", arg ? arg : "",
            strerror(errno));
    exit(1);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench-local-floor -k mbox|maildir -d PATH -m MESSAGE -c COUNT -n USER\n");
    exit(64);
}

/* The child's part of delivery i; returns the exit status. */
static int deliver(int maildir, const char *path, const char *msg, size_t len, int i)
{
    char tmp[4096], dst[4096];
    int fd, dir;

    if (!maildir) {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
            return 2;
        if (write(fd, msg, len) != (ssize_t) len || fsync(fd) != 0)
            return 3;
        close(fd);
        return 0;
    }
    snprintf(tmp, sizeof tmp, "%s/tmp/%ld.P%dQ%d.floor", path, (long) time(NULL), getpid(), i);
    snprintf(dst, sizeof dst, "%s/new/%ld.P%dQ%d.floor", path, (long) time(NULL), getpid(), i);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return 2;
    if (write(fd, msg, len) != (ssize_t) len || fsync(fd) != 0)
        return 3;
    close(fd);
    if (rename(tmp, dst) != 0)
        return 4;
    snprintf(tmp, sizeof tmp, "%s/new", path);
    dir = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0 || fsync(dir) != 0)
        return 5;
    close(dir);
    return 0;
}

int main(int argc, char **argv)
{
    const char *kind = NULL, *path = NULL, *msgfile = NULL, *user = NULL;
    long count = 0;
    int opt, maildir, errors = 0;
    struct passwd *pw;
    struct stat st;
    char *msg, sub[4096];
    size_t msglen;
    struct timespec t0, t1;
    double secs;
    FILE *f;

    while ((opt = getopt(argc, argv, "k:d:m:c:n:")) != -1) {
        switch (opt) {
        case 'k': kind = optarg; break;
        case 'd': path = optarg; break;
        case 'm': msgfile = optarg; break;
        case 'c': count = strtol(optarg, NULL, 10); break;
        case 'n': user = optarg; break;
        default: usage();
        }
    }
    if (!kind || !path || !msgfile || !user || count <= 0 || optind != argc)
        usage();
    if (strcmp(kind, "mbox") == 0)
        maildir = 0;
    else if (strcmp(kind, "maildir") == 0)
        maildir = 1;
    else
        usage();
    errno = 0;
    if (!(pw = getpwnam(user)))
        die("no such user", user);
    if (pw->pw_uid == 0 || pw->pw_gid == 0) {
        fprintf(stderr, "bench-local-floor: %s is root or in group root: refused\n", user);
        return 1;
    }
    if (!(f = fopen(msgfile, "r")) || fstat(fileno(f), &st) != 0)
        die("cannot open", msgfile);
    {
        static const char from[] = "From bench@example.org  Sat Nov 21 00:00:00 2026\n";
        size_t head = maildir ? 0 : sizeof from - 1, len = st.st_size;
        if (!(msg = malloc(head + len + 2)))
            die("out of memory", NULL);
        memcpy(msg, from, head);
        if (fread(msg + head, 1, len, f) != len)
            die("cannot read", msgfile);
        len += head;
        if (!maildir) {
            if (len > head && msg[len - 1] != '\n')
                msg[len++] = '\n';
            msg[len++] = '\n';
        }
        msglen = len;
    }
    fclose(f);
    if (maildir) {
        const char *subs[] = { "", "/tmp", "/new", "/cur" };
        for (int i = 0; i < 4; i++) {
            snprintf(sub, sizeof sub, "%s%s", path, subs[i]);
            if (mkdir(sub, 0700) != 0 && errno != EEXIST)
                die("cannot create", sub);
            if (chown(sub, pw->pw_uid, pw->pw_gid) != 0)
                die("cannot chown", sub);
        }
    }

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < count; i++) {
        int status;
        pid_t pid = fork();
        if (pid < 0)
            die("fork", NULL);
        if (pid == 0) {
            if (setgroups(0, NULL) != 0 || setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) != 0 ||
                setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) != 0)
                _exit(1);
            _exit(deliver(maildir, path, msg, msglen, (int) i));
        }
        if (waitpid(pid, &status, 0) != pid)
            die("waitpid", NULL);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            if (errors++ == 0)
                fprintf(stderr, "bench-local-floor: delivery %ld failed (child status %#x)\n", i, status);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("deliveries=%ld errors=%d secs=%.3f rate=%.1f\n", count, errors, secs, count / secs);
    return errors ? 1 : 0;
}
