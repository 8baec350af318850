/*
 * wrr.c - smooth weighted round robin (see wrr.h for the idea).
 */
#include "routing/wrr.h"

#include <string.h>

void
wrr_init(struct wrr *w, const int *weights, int npeers)
{
    memset(w, 0, sizeof(*w));
    if (npeers > WRR_MAX_PEERS)
        npeers = WRR_MAX_PEERS;
    w->npeers = npeers < 0 ? 0 : npeers;
    for (int i = 0; i < w->npeers; i++)
        w->weight[i] = weights[i] > 0 ? weights[i] : 0;
}

int
wrr_pick(struct wrr *w, unsigned eligible_mask)
{
    int best = -1, total = 0;

    for (int i = 0; i < w->npeers; i++) {
        if (!(eligible_mask & (1u << i)) || w->weight[i] == 0)
            continue;
        w->current[i] += w->weight[i];
        total += w->weight[i];
        if (best < 0 || w->current[i] > w->current[best])
            best = i;
    }
    if (best >= 0)
        w->current[best] -= total;
    return best;
}
