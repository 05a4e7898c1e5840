/*
 * kwal_receive_cmd.c -- `kwal receive -c FILE [-X key=value]...`: receiver
 * mode as a long-running service (receiver/receiver.h).
 *
 * Loads the configuration (the one table of common/kw_conf.c), builds the
 * WAL's options from its wal.* keys (kwal_wal_options_from_conf), creates the
 * service and runs it until SIGTERM or SIGINT, whose handler only calls
 * kw_receiver_stop() (async-signal-safe). Logs go to stderr at log.level.
 * Exit 0 after a requested stop with everything delivered; 1 with a one-line
 * reason on a fatal error; 2 for bad arguments or configuration.
 */
#include "kwal.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kw_log.h"
#include "receiver.h"

static kw_receiver_t *volatile running;

static void on_signal(int sig)
{
    kw_receiver_t *r = running;

    (void)sig;
    if (r != NULL)
        kw_receiver_stop(r);
}

static void print_receive_usage(FILE *out)
{
    fputs("Usage: kwal receive -c FILE [-X key=value]...\n"
          "\n"
          "Receiver mode: receiver threads consume topics in consumer group group.id,\n"
          "cut blocks, append them to the WAL, store the offsets in ZooKeeper, and\n"
          "deliver batches to the sink. Runs until SIGTERM or SIGINT, then flushes\n"
          "every receiver, drains the pipeline, delivers the last batch and exits 0.\n"
          "group.id and topics are required. Keys:\n"
          "\n", out);
    kw_conf_print_help(out);
}

int kwal_receive_main(int argc, char **argv)
{
    const char **overrides = NULL;
    const char *path = NULL;
    kw_receiver_t *rcv = NULL;
    kw_wal_options_t wopts;
    struct sigaction sa;
    char errstr[1024];
    kw_conf_t *conf = NULL;
    size_t noverrides = 0;
    int rc = KWAL_EXIT_USAGE;
    kw_err_t err;

    overrides = calloc((size_t)argc, sizeof(*overrides));
    if (overrides == NULL) {
        kwal_error("out of memory");
        return KWAL_EXIT_FAIL;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_receive_usage(stdout);
            rc = KWAL_EXIT_OK;
            goto cleanup;
        } else if ((r = kwal_conf_opt(argc, argv, &i, &path, overrides,
                                      &noverrides)) != 0) {
            if (r < 0) {
                rc = kwal_usage_error("receive", "receive: %s needs an argument", a);
                goto cleanup;
            }
        } else {
            rc = kwal_usage_error("receive", "receive: unexpected argument '%s'", a);
            goto cleanup;
        }
    }
    err = kw_conf_load(path, overrides, noverrides, &conf, errstr, sizeof(errstr));
    if (err != KW_OK) {
        kwal_error("receive: %s", errstr);
        rc = err == KW_ENOMEM ? KWAL_EXIT_FAIL : KWAL_EXIT_USAGE;
        goto cleanup;
    }
    if (kw_conf_is_set(conf, "log.level"))
        kw_log_set_level((kw_log_level_t)conf->log.level);
    err = kwal_wal_options_from_conf(conf, NULL, 0, &wopts, errstr, sizeof(errstr));
    if (err != KW_OK) {
        kwal_error("receive: %s", errstr);
        goto cleanup;
    }
    err = kw_receiver_new(conf, &wopts, &rcv, errstr, sizeof(errstr));
    if (err != KW_OK) {
        kwal_error("receive: %s", errstr);
        rc = err == KW_ECONFIG ? KWAL_EXIT_USAGE : KWAL_EXIT_FAIL;
        goto cleanup;
    }

    running = rcv;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    err = kw_receiver_run(rcv, errstr, sizeof(errstr));
    running = NULL;
    if (err != KW_OK) {
        kwal_error("receive: %s", errstr);
        rc = KWAL_EXIT_FAIL;
    } else {
        rc = KWAL_EXIT_OK;
    }

cleanup:
    kw_receiver_destroy(rcv);
    kw_conf_destroy(conf);
    free(overrides);
    return rc;
}
