/*
 * kwal_instance.c -- what `kwal receive`, `kwal recover` and `kwal direct`
 * do first: lock the instance's state directory, name the instance, and open
 * its ZooKeeper session -- the one a crashed predecessor left, when the
 * server still holds it (DESIGN.md, "Resuming after a crash") -- and
 * register it. See kwal.h.
 */
#include "kwal.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "kw_file.h"
#include "kw_log.h"
#include "kw_time.h"

kw_err_t kwal_instance_open(const kw_conf_t *conf, const char *state, int state_is_dir,
                            const char *what, kwal_instance_t *inst, char *errstr,
                            size_t errlen)
{
    kw_zk_options_t zo;
    int64_t start = kw_mono_ms();
    kw_err_t err;

    memset(inst, 0, sizeof(*inst));
    if (conf->receiver.instance_id != NULL && conf->receiver.instance_id[0] != '\0')
        snprintf(inst->name, sizeof(inst->name), "%s", conf->receiver.instance_id);
    else if (state != NULL)
        kw_instance_default_name(state, inst->name, sizeof(inst->name));
    if (state != NULL) {
        char dir[PATH_MAX], stem[PATH_MAX];

        if (state_is_dir) {
            snprintf(dir, sizeof(dir), "%s", state);
            snprintf(stem, sizeof(stem), "instance");
        } else {
            /* instances may share one database: DB.<name>.lock beside it */
            const char *base = kw_file_parent(state, dir, sizeof(dir));

            if (base == NULL)
                return kw_seterr(errstr, errlen, KW_EINVAL, "%s: path too long: %s", what,
                                 state);
            snprintf(stem, sizeof(stem), "%s.%s", base, inst->name);
        }
        err = kw_instance_lock(dir, stem, what, &inst->lock, errstr, errlen);
        if (err != KW_OK)
            return err;
    }
    kw_zk_options_from_conf(&zo, conf);
    if (inst->name[0] != '\0')
        zo.instance = inst->name;
    if (inst->lock != NULL)
        zo.session_file = kw_instance_session_file(inst->lock);
    err = kw_zk_new(&zo, &inst->zk, errstr, errlen);
    if (err == KW_OK)
        err = kw_zk_register(inst->zk, errstr, errlen);
    if (err != KW_OK) {
        kwal_instance_close(inst);
        return err;
    }
    if (inst->name[0] == '\0')
        snprintf(inst->name, sizeof(inst->name), "%s", kw_zk_instance(inst->zk));
    inst->ready_mono = kw_mono_ms();
    inst->zk_ms = inst->ready_mono - start;
    return KW_OK;
}

void kwal_instance_stats(const kwal_instance_t *inst, int64_t start_mono, kw_stats_t *s)
{
    kw_zk_status_t zs;

    if (inst->zk == NULL)
        return;
    kw_zk_status(inst->zk, &zs);
    s->zk_session_resumed = zs.resumed;
    s->zk_owner_nodes_inherited = zs.inherited;
    s->zk_owner_nodes_released = zs.inherited_released;
    s->zk_session_ms = inst->ready_mono - start_mono;
}

void kwal_instance_close(kwal_instance_t *inst)
{
    kw_zk_destroy(inst->zk);       /* ephemerals go, the session file too */
    inst->zk = NULL;
    kw_instance_unlock(inst->lock);
    inst->lock = NULL;
}
