/*
 * zk.h -- kwal's ZooKeeper offset store and partition ownership.
 *
 * One handle is one ZooKeeper session of one kwal instance in one consumer
 * group. It keeps the layout of DESIGN.md ("ZooKeeper layout"), below the
 * optional chroot of zookeeper.connect:
 *
 *   /consumers/<group>/ids/<instance>               ephemeral, data "host:pid"
 *   /consumers/<group>/owners/<topic>/<partition>   ephemeral, data <instance>
 *   /consumers/<group>/offsets/<topic>/<partition>  persistent, ASCII decimal
 *                                                   next offset, no newline
 *
 * Fencing (invariant 4). kw_zk_commit() writes offsets with ONE zoo_multi:
 * first a check of our ids node (so a session that is ending, whose
 * ephemerals are already gone, writes nothing), then for every partition a
 * check of our owner node at the version we created it with and a set (or
 * create) of the offset node at the version we last saw. A partition not
 * owned by this handle is refused before ZooKeeper is asked; a multi whose
 * owner check fails writes nothing and the partition is reported lost.
 * Owner nodes are ephemeral, bound to our session: they disappear with the
 * session or through kw_zk_disown(). A watch on each tells us when one is
 * deleted; the zk-session thread then checks whether our session is still
 * alive (our ids node is there): if so someone else deleted it and the
 * partition is lost; if not, the expiry is on its way and re-establishment
 * re-owns it. Limit: ZooKeeper's check compares versions only, so a third
 * party that deletes our owner node and re-creates it (version 0 again)
 * could let one commit through that was sent before the deletion watch
 * arrived. kwal never deletes an owner node it does not hold; operators
 * must not either (stop the instance instead).
 *
 * Threads. Every function except kw_zk_destroy() may be called from any
 * number of threads at once (receivers and the pipeline thread share one
 * handle). A mutex protects the handle's state; no ZooKeeper round trip is
 * made while holding it, so a slow call never blocks another thread's
 * commit. kw_zk_destroy() must be called once, after every other call has
 * returned. The handle runs one thread of its own, "zk-session", which
 * re-establishes an expired session (below), plus the ZooKeeper client's own
 * I/O and completion threads.
 *
 * Connection loss. ZCONNECTIONLOSS and ZOPERATIONTIMEOUT are retried with
 * backoff (50 ms doubling to 1 s) until the call's deadline
 * (op_timeout_ms), never ignored. A multi whose reply was lost may or may
 * not have been applied: the commit then reads every offset node back; if
 * each holds the value we wrote, the commit succeeded, if each still holds
 * the version we expected, it did not and is sent again. A commit that
 * reaches its deadline without knowing returns KW_EAGAIN: nothing is known
 * to be written, and sending the same commit again is always safe (it is
 * idempotent, see kw_zk_commit()). Multis are atomic, so no commit is ever
 * half applied.
 *
 * Session expiry. The zk-session thread closes the dead client handle, opens
 * a new session (retrying until it succeeds or the handle is destroyed),
 * re-creates the ids node, then re-creates every owner node we held and
 * re-reads its offset. A partition whose owner node another instance took
 * meanwhile is lost (see kw_zk_lost()). Until all that is done the state is
 * KW_ZK_REESTABLISHING and every commit fails with KW_EAGAIN; then the state
 * is KW_ZK_ACTIVE again and the epoch has grown by one.
 *
 * ACLs. With a digest ("user:password") every session authenticates with
 * zoo_add_auth("digest") and every node kwal creates (chroot and /consumers
 * included) gets ZOO_CREATOR_ALL_ACL: all rights for that identity, none for
 * anyone else. Other instances of the group must use the same digest.
 * Without one, nodes are created world-writable (ZOO_OPEN_ACL_UNSAFE).
 *
 * Resuming. With options.session_file, every session this handle opens is
 * saved there (id and password, kw_file_replace), and kw_zk_new first tries
 * to resume the session the file names: a process restarted after a crash
 * gets its predecessor's session back while the server still holds it, and
 * with it the ids node and the owner nodes, so it waits for no expiry. The
 * instance lock guarantees that only one process ever uses the file, so a
 * resumed session is the same owner, never a second one (invariant 4). If
 * the saved session has expired (or belongs to another ensemble), a new one
 * is opened as without the file. Owner nodes the resumed session holds are
 * "inherited": kw_zk_own takes one back without waiting; whatever the
 * instance does not take back is deleted by kw_zk_release_inherited, so
 * that another instance can have it. kw_zk_destroy closes the session and
 * removes the file (nothing is left to resume).
 *
 * Chroot. A "/chroot" suffix of zookeeper.connect is handled here rather
 * than by the client library: the session is opened on the hosts, the chroot
 * path is created when missing, and every path is prefixed with it.
 */
#ifndef KW_ZK_H
#define KW_ZK_H

#include <stddef.h>
#include <stdint.h>

#include "kw_conf.h"
#include "kw_err.h"

#define KW_ZK_TOPIC_MAX 256     /* Kafka topic names are at most 249 bytes */

typedef struct kw_zk kw_zk_t;

typedef struct kw_zk_options {
    const char *connect;            /* zookeeper.connect: host:port[,host:port...][/chroot] */
    const char *group;              /* group.id */
    const char *instance;           /* ids node name; NULL: "<hostname>-<pid>" */
    const char *digest;             /* "user:password" for digest ACLs; NULL: open ACLs */
    int         session_timeout_ms; /* zookeeper.session.timeout.ms; 0: 30000 */
    int         connect_timeout_ms; /* wait for the first session in kw_zk_new; 0: 15000 */
    int         op_timeout_ms;      /* deadline of one call across retries; 0: 30000 */
    const char *session_file;       /* where the session is kept for a restart to
                                     * resume (see "Resuming"); NULL: never resumed.
                                     * The caller holds the instance lock
                                     * (kw_instance.h) for as long as the handle lives. */
} kw_zk_options_t;

/* Sets defaults; connect and group stay to be filled in. */
void kw_zk_options_init(kw_zk_options_t *opts);

/* Defaults, then what conf says: zookeeper.connect, group.id,
 * zookeeper.session.timeout.ms, zookeeper.op.timeout.ms, instance.id. The
 * strings point into conf. */
void kw_zk_options_from_conf(kw_zk_options_t *opts, const kw_conf_t *conf);

/*
 * Connect and wait (up to connect_timeout_ms) for a session; create the
 * chroot, /consumers/<group>/{ids,owners,offsets} when missing. Unreachable
 * ZooKeeper gives KW_ETIMEDOUT with errstr naming the connect string; a
 * malformed option KW_ECONFIG. The options' strings are copied. On success
 * *zk is owned by the caller. Does not register the instance: see
 * kw_zk_register().
 */
kw_err_t kw_zk_new(const kw_zk_options_t *opts, kw_zk_t **zk,
                   char *errstr, size_t errlen);

/* Closes the session (so every ephemeral node of ours disappears at once),
 * stops the zk-session thread, frees everything. NULL is a no-op. */
void kw_zk_destroy(kw_zk_t *zk);

/* Create /consumers/<group>/ids/<instance> (data "host:pid"). Required
 * before kw_zk_own() (every commit checks this node). If another session
 * holds the name: KW_EBUSY at once when that session's process runs on this
 * host (a second kwal with the same instance.id), else wait up to the
 * session timeout + 2 s for it to expire (a crashed predecessor that left no
 * session to resume), then KW_EBUSY. Re-done by the zk-session thread after
 * expiry; if another session took the name meanwhile, commits are refused
 * with KW_EFENCED. */
kw_err_t kw_zk_register(kw_zk_t *zk, char *errstr, size_t errlen);

/*
 * Take ownership of a partition: create its ephemeral owner node (data: our
 * instance) and read its stored offset. If another instance holds it, wait
 * (a watch on the node, and a poll every 200 ms) until it is released, for
 * at most timeout_ms; then KW_EBUSY, errstr naming the holder. Owning what we
 * already own is KW_OK. KW_EINVAL before kw_zk_register(); KW_EAGAIN when
 * ZooKeeper stays unreachable past op_timeout_ms. Any thread.
 */
kw_err_t kw_zk_own(kw_zk_t *zk, const char *topic, int32_t partition,
                   int timeout_ms, char *errstr, size_t errlen);

/* Give a partition up: forget it locally (later commits for it are refused),
 * then delete its owner node. KW_OK also when it was not owned. Any thread. */
kw_err_t kw_zk_disown(kw_zk_t *zk, const char *topic, int32_t partition,
                      char *errstr, size_t errlen);

/* Read the stored next offset of a partition (owned or not) from ZooKeeper.
 * KW_ENOTFOUND when none is stored; KW_ECORRUPT when the node does not hold
 * an ASCII decimal. Any thread. */
kw_err_t kw_zk_get_offset(kw_zk_t *zk, const char *topic, int32_t partition,
                          int64_t *next, char *errstr, size_t errlen);

typedef struct kw_zk_offset {
    const char *topic;
    int32_t     partition;
    int64_t     next;           /* next offset to consume, >= 0 */
} kw_zk_offset_t;

/* Allow kw_zk_commit() to move an offset backwards (recovery). */
#define KW_ZK_COMMIT_FORCE 0x1u

/*
 * Store the next offsets of n partitions, all or nothing, in one zoo_multi
 * guarded by their owner nodes (invariant 4). Offsets never move backwards:
 * a partition whose stored offset is already >= next is left as it is (not
 * an error), unless flags has KW_ZK_COMMIT_FORCE. So a commit may be sent
 * again, or arrive late, without harm. The same partition may not appear
 * twice in offs. Returns:
 *   KW_OK       every offset is stored (or was already at least as far);
 *   KW_EFENCED  a partition is not owned here (nothing sent; errstr names
 *               it), or its owner node is gone or changed (nothing written;
 *               the partition is now lost, see kw_zk_lost());
 *   KW_EAGAIN   ZooKeeper unreachable until the deadline, the session is
 *               being re-established, or a partition's ownership is being
 *               re-established or verified: nothing known written, retry
 *               (kw_zk_status() tells the state, kw_zk_lost() what was lost);
 *   KW_EIO      any other ZooKeeper error (errstr has zerror's text).
 * Any thread; the caller keeps ownership of offs.
 */
kw_err_t kw_zk_commit(kw_zk_t *zk, const kw_zk_offset_t *offs, size_t n,
                      unsigned flags, char *errstr, size_t errlen);

typedef struct kw_zk_partition {
    char    topic[KW_ZK_TOPIC_MAX];
    int32_t partition;
} kw_zk_partition_t;

/* Fill up to nmax partitions we own (in the order they were owned); returns
 * how many we own. Any thread. */
size_t kw_zk_owned(kw_zk_t *zk, kw_zk_partition_t *out, size_t nmax);

/* Take the partitions lost since the last call (another instance took them
 * while our session was gone, or their owner node vanished): fills up to
 * nmax, removes what it returned, returns how many it returned. A lost
 * partition is no longer owned. Any thread. */
size_t kw_zk_lost(kw_zk_t *zk, kw_zk_partition_t *out, size_t nmax);

typedef enum {
    KW_ZK_ACTIVE = 0,          /* session live and every owner node in place */
    KW_ZK_DISCONNECTED,        /* session live, connection lost; calls retry */
    KW_ZK_REESTABLISHING       /* session expired; commits fail with KW_EAGAIN */
} kw_zk_state_t;

typedef struct kw_zk_status {
    kw_zk_state_t state;
    uint64_t epoch;            /* +1 each time ownership was re-established after expiry */
    uint64_t expiries;         /* sessions lost */
    uint64_t lost_total;       /* partitions ever lost */
    uint64_t commits;          /* successful kw_zk_commit calls */
    uint64_t commit_retries;   /* multis re-sent after connection loss */
    uint64_t stale_skipped;    /* offsets left alone because they would move back */
    int64_t  session_id;
    int      resumed;          /* the first session was resumed from session_file */
    uint64_t inherited;        /* owner nodes the resumed session held */
    uint64_t inherited_released; /* ... deleted by kw_zk_release_inherited */
} kw_zk_status_t;

void kw_zk_status(kw_zk_t *zk, kw_zk_status_t *st);

/* The current session's id and 16-byte password: diagnostics, and tests that
 * force an expiry by opening and closing a second client on the session. */
void kw_zk_session_credentials(kw_zk_t *zk, int64_t *id, char passwd[16]);

/* Delete the owner nodes inherited from a resumed session that have not been
 * taken back with kw_zk_own (see "Resuming"); returns how many were
 * deleted. Call once the instance knows what it owns (a receiver service:
 * when every receiver has had its first assignment). Any thread. */
size_t kw_zk_release_inherited(kw_zk_t *zk);

/* The names of the group's registered instances (the children of
 * /consumers/<group>/ids, this one included once registered), sorted by
 * strcmp: *names is a malloc'd array of *n malloc'd strings, freed with
 * kw_zk_names_free. One read; KW_EAGAIN when ZooKeeper stays unreachable
 * past op_timeout_ms or the session is being re-established. Direct mode's
 * assignment is computed from it (direct.h). Any thread. */
kw_err_t kw_zk_members(kw_zk_t *zk, char ***names, size_t *n, char *errstr, size_t errlen);

void kw_zk_names_free(char **names, size_t n);

/* The instance name (the ids node's name). Any thread. */
const char *kw_zk_instance(const kw_zk_t *zk);

/* Block until the state is KW_ZK_ACTIVE, for at most timeout_ms: KW_OK or
 * KW_ETIMEDOUT. Any thread. */
kw_err_t kw_zk_wait_active(kw_zk_t *zk, int timeout_ms);

/* ---- Reading a group (kwal status) ----
 *
 * A view is a ZooKeeper session that only reads a group's nodes: it creates
 * nothing (no chroot, no /consumers/<group>, no ids node), so looking at a
 * group never changes it -- a group that does not exist is reported as such
 * (kw_zk_view_group_exists), not created. It honours the chroot of
 * zookeeper.connect and the digest of the options exactly as kw_zk_new()
 * does (a group made with a digest is readable only with the same one:
 * KW_EAUTH otherwise). Each call is a few independent reads, retried across
 * connection loss until op_timeout_ms; a group that changes meanwhile (an
 * instance leaving, a partition changing hands) gives a mix of before and
 * after, never an error: a node that vanishes between its listing and its
 * read is left out. One thread at a time per view; zk_view.c.
 */
typedef struct kw_zk_view kw_zk_view_t;

/* A registered instance: /consumers/<group>/ids/<name>. */
typedef struct kw_zk_member {
    char    name[256];
    char    data[300];         /* the node's data as written, "host:pid" */
    int64_t created_ms;        /* when it registered (the node's ctime, wall ms) */
} kw_zk_member_t;

/* A partition the group knows: it has an owner node, an offset node, or both. */
typedef struct kw_zk_part_info {
    char    topic[KW_ZK_TOPIC_MAX];
    int32_t partition;
    char    owner[256];        /* owner node's data (an instance name); "" unowned */
    int64_t offset;            /* stored next offset; -1 when none (or corrupt) */
    int     offset_corrupt;    /* the offset node does not hold an ASCII decimal */
} kw_zk_part_info_t;

/*
 * Connect (connect_timeout_ms) with opts->connect (its chroot honoured),
 * opts->group, opts->digest, opts->session_timeout_ms, opts->op_timeout_ms;
 * instance and session_file are ignored. Unreachable ZooKeeper: KW_ETIMEDOUT,
 * errstr naming the connect string; bad options: KW_ECONFIG. On success
 * *view is the caller's.
 */
kw_err_t kw_zk_view_open(const kw_zk_options_t *opts, kw_zk_view_t **view,
                         char *errstr, size_t errlen);

/* Close the session. NULL is a no-op. */
void kw_zk_view_close(kw_zk_view_t *view);

/* *exists: 1 when /consumers/<group> (below the chroot) exists, else 0. */
kw_err_t kw_zk_view_group_exists(kw_zk_view_t *view, int *exists,
                                 char *errstr, size_t errlen);

/* The registered instances, sorted by name. *members is malloc'd (free()
 * it; NULL when *n is 0). A group without an ids node has none. */
kw_err_t kw_zk_view_members(kw_zk_view_t *view, kw_zk_member_t **members, size_t *n,
                            char *errstr, size_t errlen);

/* Every partition with an owner or an offset node, sorted by topic, then
 * partition. Child names that are not a decimal partition number, and topic
 * names kwal could not have written, are skipped. *parts is malloc'd (free()
 * it; NULL when *n is 0). */
kw_err_t kw_zk_view_partitions(kw_zk_view_t *view, kw_zk_part_info_t **parts, size_t *n,
                               char *errstr, size_t errlen);

#endif /* KW_ZK_H */
