/*
 * kw_instance.h -- one kwal process per instance: the instance lock, the
 * default instance name, and where the instance keeps what a restart resumes.
 *
 * An instance is identified by its state: the first of wal.dirs in receive
 * mode (files DIR/instance.lock and DIR/instance.zk-session), the sqlite
 * sink's database in direct mode (DB.<instance>.lock and
 * DB.<instance>.zk-session beside it, since instances may share one
 * database). The process that runs it holds an exclusive flock(2) on the
 * .lock file for its whole life, so that a second process started on the
 * same state is refused at once with the first one's pid (KW_ELOCKED),
 * before it connects to anything. Under that lock, and only under it, the
 * process reads and writes the .zk-session file: the ZooKeeper session a
 * restart resumes (DESIGN.md, "Resuming after a crash"; zk.h, "Resuming").
 * The kernel releases the lock when the process dies, however it dies.
 *
 * The default instance name (instance.id empty) is "<host>-<16 hex digits>",
 * the digits a hash of the state's real path (directory or database): the same on every
 * restart of the same instance, different for two instances on one host.
 * The ZooKeeper ids node and the receivers' Kafka group.instance.id are
 * made from it.
 */
#ifndef KW_INSTANCE_H
#define KW_INSTANCE_H

#include <stddef.h>

#include "kw_err.h"

typedef struct kw_instance kw_instance_t;

/*
 * Create dir when missing and lock dir/<stem>.lock. KW_ELOCKED (errstr
 * naming the holder's pid and `what`, e.g. "wal.dirs") when another process
 * holds it; KW_EIO when dir cannot be made or locked. Any thread.
 */
kw_err_t kw_instance_lock(const char *dir, const char *stem, const char *what,
                          kw_instance_t **out, char *errstr, size_t errlen);

/* Release the lock and free. NULL is a no-op. */
void kw_instance_unlock(kw_instance_t *inst);

/* dir/<stem>.zk-session: the ZooKeeper session file (zk.h, session_file). */
const char *kw_instance_session_file(const kw_instance_t *inst);

/* The default instance name for the state at path (see above) into buf
 * (256 bytes are enough). */
void kw_instance_default_name(const char *path, char *buf, size_t len);

/* An instance's name: instance_id when set (not NULL, not ""), else the
 * default name of the state at `state` (when not NULL), else fallback;
 * written into buf (256 bytes are enough), which is returned. */
const char *kw_instance_name(const char *instance_id, const char *state, const char *fallback,
                             char *buf, size_t len);

#endif /* KW_INSTANCE_H */
