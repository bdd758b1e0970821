/* snapshot: see snapshot.h. */
#include "snapshot.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "config.h"
#include "metrics.h"
#include "ratelimit_redis.h"
#include "upstream.h"
#include "worker.h"

int snapshot_install(struct worker *w, struct config *cfg, struct metrics *metrics,
                     struct metrics *baseline)
{
    struct snapshot *snap = calloc(1, sizeof(*snap));
    if (!snap)
        return -ENOMEM;
    snap->w = w;
    snap->cfg = cfg;
    snap->upstreams =
        upstream_set_new(&(struct upstream_owner){w->id, &w->draining, &w->stats.upstream_conns,
                                                  &w->upstream_registry},
                         cfg);
    if (!snap->upstreams) {
        free(snap);
        return -ENOMEM;
    }
    snap->metrics = metrics;
    snap->refs = 1;
    struct snapshot *old = w->snap;
    w->snap = snap;
    w->cfg = cfg;
    if (old)
        old->baseline = baseline;
    else
        metrics_free(baseline);
    snapshot_release(old);
    ratelimit_redis_prepare(cfg); /* connect to the rate-limit stores it names */
    return 0;
}

struct snapshot *snapshot_acquire(struct worker *w)
{
    w->snap->refs++;
    return w->snap;
}

void snapshot_release(struct snapshot *snap)
{
    if (!snap || --snap->refs > 0)
        return;
    struct snapshot *now = snap->w->snap;
    if (snap->baseline && now && now != snap)
        metrics_carry_since(now->metrics, now->cfg, snap->metrics, snap->baseline, snap->cfg);
    metrics_free(snap->baseline);
    upstream_set_free(snap->upstreams);
    metrics_free(snap->metrics);
    config_unref(snap->cfg);
    free(snap);
}
