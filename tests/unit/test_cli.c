/*
 * test_cli.c -- the command-line helpers: a fatal signal's report
 * (kw_cli_on_crash_signals) in a child process, read from its stderr.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli.h"

/* Runs the child with stderr on a pipe; its status and what it wrote. */
static int run_child(void (*child)(void), char *out, size_t cap, int *status)
{
    int fds[2];
    size_t used = 0;
    pid_t pid;

    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        child();
        _exit(99);      /* not reached: the child dies of its signal */
    }
    close(fds[1]);
    for (;;) {
        ssize_t n = read(fds[0], out + used, cap - 1 - used);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        used += (size_t)n;
        if (used == cap - 1)
            break;
    }
    out[used] = '\0';
    close(fds[0]);
    assert_int_equal(waitpid(pid, status, 0), pid);
    return (int)used;
}

static int installed;

static __attribute__((noinline)) void crash_here(void)
{
    volatile int *volatile p = NULL;

    *p = 1;     /* SIGSEGV */
}

static void segv_child(void)
{
    if (!kw_cli_on_crash_signals("test_cli"))
        _exit(77);
    crash_here();
}

static void abort_child(void)
{
    if (!kw_cli_on_crash_signals("test_cli"))
        _exit(77);
    abort();
}

static void check_report(void (*child)(void), int sig, const char *name)
{
    char out[16384], want[64];
    int status;

    run_child(child, out, sizeof(out), &status);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
        installed = 0;  /* a sanitizer build: its runtime reports */
        return;
    }
    installed = 1;
    /* it died of the signal itself, as without the handler */
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), sig);
    snprintf(want, sizeof(want), "test_cli: fatal signal %s in pid ", name);
    assert_non_null(strstr(out, want));
    assert_non_null(strstr(out, "; stack:\n"));
    /* at least two frames after the header line: the handler's and the caller's */
    const char *stack = strstr(out, "; stack:\n") + strlen("; stack:\n");
    int lines = 0;

    for (const char *q = stack; *q != '\0'; q++)
        lines += *q == '\n';
    assert_true(lines >= 2);
}

static void test_segv_report(void **state)
{
    (void)state;
    check_report(segv_child, SIGSEGV, "SIGSEGV");
    if (!installed)
        skip();
}

static void test_abort_report(void **state)
{
    (void)state;
    check_report(abort_child, SIGABRT, "SIGABRT");
    if (!installed)
        skip();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_segv_report),
        cmocka_unit_test(test_abort_report),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
