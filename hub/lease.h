/*
 * lease: the partitions' leader leases and the share each hub takes (see
 * lease.c).
 */
#ifndef GC_HUB_LEASE_H
#define GC_HUB_LEASE_H

struct hub;
struct part;

/*
 * Every second (the cron) and when Redis is back: say this hub is alive,
 * renew the leases it holds, take free ones up to its share (none when
 * stopping), and mark for handing over those it holds beyond its share.
 */
void	lease_tick(struct hub *h);
/*
 * Whether to act as p's leader now. A hub that was frozen (SIGSTOP, a
 * stalled machine) may wake up with replies queued before the one that
 * says its lease is gone: by its own clock the lease may have expired and
 * another hub may lead, so it stops (batch_reset()) before publishing
 * anything.
 */
int	lease_leading(struct part *p);
/*
 * Stop leading p and give its lease back if Redis still says it is ours
 * (compare and delete): a handover, or the stop. hub_settled() is called
 * once Redis has answered.
 */
void	lease_give(struct part *p);
/* Leave the set of hubs alive at once (the stop): the others' share grows
 * at their next tick. */
void	lease_leave(struct hub *h);

#endif
