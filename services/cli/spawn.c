/* spawn.c: fork and exec for `ursa up` and `ursa demo` (spawn.h). */
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

pid_t spawn_exec(const char *prog, char *const argv[], const spawn_opts *o, int *out_fd) {
    int fd[2] = {-1, -1};
    if (o->pipe_out && pipe(fd)) return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        if (o->detach) {
            setsid();
            int in = open("/dev/null", O_RDONLY);
            if (in >= 0) dup2(in, 0);
        }
        if (o->log) {
            int out = open(o->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (out >= 0) {
                dup2(out, 1);
                dup2(out, 2);
            }
        }
        if (o->pipe_out) dup2(fd[1], 1);
        if (o->detach || o->pipe_out)
            for (int k = 3; k < 1024; k++) close(k);
        for (const char *const *u = o->unset; u && *u; u++) unsetenv(*u);
        execvp(prog, argv);
        fprintf(stderr, "ursa: cannot run %s: %s\n", prog, strerror(errno));
        _exit(127);
    }
    if (o->pipe_out) {
        close(fd[1]);
        if (pid < 0) close(fd[0]);
        else *out_fd = fd[0];
    }
    return pid;
}

int spawn_run(const char *prog, char *const argv[], int echo, char **out) {
    int fd = -1;
    pid_t pid = spawn_exec(prog, argv, &(spawn_opts){.pipe_out = 1}, &fd);
    if (pid < 0) return -1;
    char buf[8192], *acc = NULL;
    size_t len = 0, cap = 0;
    int nomem = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        if (echo) {
            fwrite(buf, 1, (size_t)r, stdout);
            fflush(stdout);
        }
        if (out && !nomem) {
            if (len + (size_t)r + 1 > cap) {
                size_t ncap = (len + (size_t)r + 1) * 2;
                char *t = realloc(acc, ncap);
                if (!t) {
                    nomem = 1; /* keep reading so the child is not blocked */
                    continue;
                }
                acc = t, cap = ncap;
            }
            memcpy(acc + len, buf, (size_t)r);
            len += (size_t)r;
            acc[len] = '\0';
        }
    }
    close(fd);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (out) *out = acc ? acc : strdup("");
    return nomem || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}
