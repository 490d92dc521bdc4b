/*
 * bench-forkexec - the minimal fork+exec baseline of scripts/bench.
 *
 * Usage: bench-forkexec -t HOST:PORT | -u PATH [-b BACKLOG] [-n USER] [-s]
 *
 * Listens on one TCP (IPv4) or unix-domain stream socket. For every accepted
 * connection it forks; the child drops to USER (default "nobody": groups,
 * then gid, then uid), puts the connection on descriptors 0, 1 and 2 and
 * execs /bin/cat. The parent never waits on a child in line: SIGCHLD
 * interrupts accept and the parent then reaps with waitpid(WNOHANG) until
 * nothing is left. No process limit, no time limit: this is the floor of
 * what per-connection fork+exec costs, to set Postfix spawn and postern
 * spawn beside. It runs until SIGTERM or SIGINT.
 *
 * With -s the child calls setsid() before dropping privileges, so that each
 * command leads its own session, as Postfix spawn and postern spawn make it
 * do. This isolates the cost of that one requirement: with the kernel's
 * autogroup scheduling (kernel.sched_autogroup_enabled = 1) every session is
 * its own scheduling group, so each /bin/cat then competes with the load
 * generator as a whole group rather than as one task among many.
 *
 * Exit status: 0 on SIGTERM/SIGINT, 1 on a setup error, 64 on bad usage.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t child_exited;
static volatile sig_atomic_t stop_requested;

static void on_sigchld(int sig)
{
    (void) sig;
    child_exited = 1;
}

static void on_stop(int sig)
{
    (void) sig;
    stop_requested = 1;
}

static void die(const char *what)
{
    fprintf(stderr, "bench-forkexec: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench-forkexec -t HOST:PORT | -u PATH [-b BACKLOG] [-n USER] [-s]\n"
            "  -s  each command leads its own session (setsid before exec)\n");
    exit(64);
}

static int listen_inet(const char *spec, int backlog)
{
    char host[64];
    const char *colon = strrchr(spec, ':');
    struct sockaddr_in sin;
    int fd, on = 1;

    if (colon == NULL || (size_t) (colon - spec) >= sizeof(host))
        usage();
    memcpy(host, spec, (size_t) (colon - spec));
    host[colon - spec] = 0;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short) atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
        usage();
    if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        die("socket");
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) < 0)
        die("setsockopt SO_REUSEADDR");
    if (bind(fd, (struct sockaddr *) &sin, sizeof(sin)) < 0)
        die("bind");
    if (listen(fd, backlog) < 0)
        die("listen");
    return fd;
}

static int listen_unix(const char *path, int backlog)
{
    struct sockaddr_un sun;
    int fd;

    if (strlen(path) >= sizeof(sun.sun_path))
        usage();
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    strcpy(sun.sun_path, path);
    (void) unlink(path);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        die("socket");
    if (bind(fd, (struct sockaddr *) &sun, sizeof(sun)) < 0)
        die("bind");
    if (chmod(path, 0666) < 0)
        die("chmod");
    if (listen(fd, backlog) < 0)
        die("listen");
    return fd;
}

static void reap(void)
{
    int saved = errno;

    child_exited = 0;
    while (waitpid(-1, NULL, WNOHANG) > 0)
         /* void */ ;
    errno = saved;
}

int main(int argc, char **argv)
{
    const char *inet = NULL, *unix_path = NULL, *user = "nobody";
    int backlog = 128, new_session = 0, ch, lfd;
    struct passwd *pw;
    struct sigaction sa;
    sigset_t none;

    while ((ch = getopt(argc, argv, "t:u:b:n:s")) != -1) {
        switch (ch) {
        case 't': inet = optarg; break;
        case 'u': unix_path = optarg; break;
        case 'b': backlog = atoi(optarg); break;
        case 'n': user = optarg; break;
        case 's': new_session = 1; break;
        default: usage();
        }
    }
    if ((inet == NULL) == (unix_path == NULL) || backlog <= 0)
        usage();
    if ((pw = getpwnam(user)) == NULL || pw->pw_uid == 0) {
        fprintf(stderr, "bench-forkexec: no unprivileged user %s\n", user);
        exit(1);
    }
    lfd = inet ? listen_inet(inet, backlog) : listen_unix(unix_path, backlog);

    /*
     * No SA_RESTART: a signal interrupts accept() with EINTR, and the loop
     * reaps or stops before accepting again. The handlers only set flags.
     */
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_NOCLDSTOP;
    if (sigaction(SIGCHLD, &sa, NULL) < 0)
        die("sigaction SIGCHLD");
    sa.sa_handler = on_stop;
    sa.sa_flags = 0;
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
        die("sigaction SIGTERM");
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&none);

    while (!stop_requested) {
        int cfd;
        pid_t pid;

        if (child_exited)
            reap();
        cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of resources: reap and retry rather than give up. */
                reap();
                continue;
            }
            die("accept");
        }
        pid = fork();
        if (pid == 0) {
            signal(SIGCHLD, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            signal(SIGINT, SIG_DFL);
            signal(SIGPIPE, SIG_DFL);
            sigprocmask(SIG_SETMASK, &none, NULL);
            if (new_session && setsid() < 0)
                _exit(71);
            if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
                _exit(71);
            if (dup2(cfd, 0) < 0 || dup2(cfd, 1) < 0 || dup2(cfd, 2) < 0)
                _exit(71);
            if (cfd > 2)
                close(cfd);
            execl("/bin/cat", "cat", (char *) NULL);
            _exit(127);
        }
        if (pid < 0)
            fprintf(stderr, "bench-forkexec: fork: %s\n", strerror(errno));
        close(cfd);
    }
    if (unix_path)
        (void) unlink(unix_path);
    return 0;
}
