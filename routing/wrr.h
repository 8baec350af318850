/*
 * wrr.h - smooth weighted round robin, nginx's algorithm.
 *
 * Each pick adds every peer's weight to its current value, chooses the peer
 * with the largest current value, and subtracts the total from it.  Weights
 * {5,1,1} give a a b a c a a: spread out, not bursty.  A weight of 0 takes a
 * peer out of the choice.  Pure and single-threaded: each worker keeps its own
 * struct wrr, so the request path takes no lock.
 */
#ifndef TANDEM_WRR_H
#define TANDEM_WRR_H

#define WRR_MAX_PEERS 16

struct wrr {
    int npeers;
    int weight[WRR_MAX_PEERS];
    int current[WRR_MAX_PEERS];
};

/* wrr_init - npeers weights (each >= 0); npeers is clamped to WRR_MAX_PEERS. */
void wrr_init(struct wrr *w, const int *weights, int npeers);

/*
 * wrr_pick - index of the next peer among those whose bit is set in
 * eligible_mask (bit i = peer i may be chosen), or -1 when no eligible
 * peer has a weight above 0.
 */
int wrr_pick(struct wrr *w, unsigned eligible_mask);

#endif /* TANDEM_WRR_H */
