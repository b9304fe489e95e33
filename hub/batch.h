/*
 * batch: the inbox pipeline of each led partition (see batch.c).
 */
#ifndef GC_HUB_BATCH_H
#define GC_HUB_BATCH_H

#include <stddef.h>

#include "common/bus.h"

struct part;
struct hub_batch;

/*
 * Do the next thing the leader of p has to do, if nothing is under way:
 * start leading (fence, presence, replay), retry the batch, read the next
 * one; stopping or handing over, finish and give the lease back. Called
 * after every step and by the cron, so a lost wake-up costs a second.
 */
void	batch_advance(struct part *p);
/* batch_advance(p) in ms (a retry), not sooner than asked before. */
void	batch_kick(struct part *p, int ms);
/*
 * Leading p stopped (or what we hold of it can no longer be trusted):
 * forget its rooms, presence and batches; its replies of before are
 * recognised as stale. The entries in flight stay pending in Redis.
 */
void	batch_reset(struct part *p);
/*
 * The verdict on a transaction's reply for p: -1 if it was not applied
 * (then memory is ahead of Redis and must be rebuilt; if the lease was
 * lost, p is no longer led).
 */
int	batch_exec_check(struct part *p, struct bus_reply *reply,
	    const char *what);
/* Entries of p's batches in flight. */
size_t	batch_entries(const struct part *p);
/* Free a batch (hub_main() at exit, for those still in flight). */
void	batch_free(struct hub_batch *b);

#endif
