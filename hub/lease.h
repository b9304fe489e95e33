/*
 * lease: the hub's leader lease (see lease.c).
 */
#ifndef GC_HUB_LEASE_H
#define GC_HUB_LEASE_H

#include "common/attr.h"
#include "common/bus.h"

struct hub;

/* Take the lease if it is free (or its holder is dead), or extend it. */
void	lease_renew(struct hub *h);
/*
 * Whether to act as leader now. A hub that was frozen (SIGSTOP, a stalled
 * machine) may wake up with replies queued before the one that says its
 * lease is gone: by its own clock the lease may have expired and another
 * hub may lead, so it stops (hub_reset()) before publishing anything.
 */
int	lease_leading(struct hub *h);
/* Give the lease back if we hold it: 0 when sent (cb gets h), -1. */
int	lease_release(struct hub *h, bus_cb *cb) GC_MUSTCHECK;

#endif
