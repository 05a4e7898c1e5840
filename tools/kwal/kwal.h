/*
 * kwal.h -- private to the `kwal` program (tools/kwal*.c): the pieces its
 * subcommands share. Not a library interface; nothing outside tools/ includes it.
 *
 * Exit status of every subcommand: KWAL_EXIT_OK on success, KWAL_EXIT_FAIL
 * with a one-line "kwal: <reason>" on stderr when the work failed,
 * KWAL_EXIT_USAGE for bad arguments or configuration (with a usage hint for
 * bad arguments). `kwal wal verify` also exits KWAL_EXIT_FAIL when it found
 * problems and KWAL_EXIT_USAGE (2) when it could not read the WAL at all.
 */
#ifndef KWAL_H
#define KWAL_H

#include <stddef.h>

#include "cli.h"
#include "kw_conf.h"
#include "kw_err.h"
#include "wal.h"

#define KWAL_EXIT_OK     0
#define KWAL_EXIT_FAIL   1
#define KWAL_EXIT_USAGE  2

/* `kwal wal ...`: argv[0] is "wal". Returns the exit status. */
int kwal_wal_main(int argc, char **argv);

/* `kwal receive ...` (kwal_receive_cmd.c): argv[0] is "receive". Returns the
 * exit status. */
int kwal_receive_main(int argc, char **argv);

/* `kwal recover ...` (kwal_receive_cmd.c): argv[0] is "recover". */
int kwal_recover_main(int argc, char **argv);

/* `kwal direct ...` (kwal_direct_cmd.c): argv[0] is "direct". */
int kwal_direct_main(int argc, char **argv);

/*
 * Fill *opts from the wal.* keys of conf (kw_wal_options_init() first, so
 * fields without a key keep the WAL's defaults). When ndirs > 0, dirs[0..ndirs-1]
 * replace wal.dirs (`--dir` on the command line); pass NULL, 0 otherwise.
 * opts->dirs point into conf (or dirs), which must outlive opts. KW_ECONFIG
 * when the settings contradict each other (a write quorum larger than the
 * number of replica directories).
 */
kw_err_t kwal_wal_options_from_conf(const kw_conf_t *conf, const char *const *dirs,
                                    int ndirs, kw_wal_options_t *opts,
                                    char *errstr, size_t errlen);

#endif /* KWAL_H */
