/* spawn.h: the one place the CLI starts other programs: the embedded
 * stack's processes (`ursa up`: detached, their output to a log) and the
 * commands `ursa demo` runs (attached, their output read back). */
#ifndef URSA_CLI_SPAWN_H
#define URSA_CLI_SPAWN_H

#include <sys/types.h>

typedef struct {
    int detach;               /* own session, stdin from /dev/null, fds 3 and up closed */
    const char *log;          /* stdout and stderr appended to this file (NULL: inherited) */
    int pipe_out;             /* stdout into a pipe whose read end goes to *out_fd */
    const char *const *unset; /* environment variables the child drops (NULL-terminated) */
} spawn_opts;

/* Forks and runs prog (a path, or a name looked up in PATH) with argv
 * (NULL-terminated, argv[0] its name). Returns the child's pid, or -1 when
 * it could not fork; a child that cannot exec says why on stderr and exits
 * 127. */
pid_t spawn_exec(const char *prog, char *const argv[], const spawn_opts *o, int *out_fd);

/* Runs prog and waits for it. Its stdout is shown when echo and kept in
 * *out (malloc'd, NUL-terminated) when out is not NULL; its stderr is ours.
 * Returns its exit status, or -1 when it could not run or was killed. */
int spawn_run(const char *prog, char *const argv[], int echo, char **out);

#endif
