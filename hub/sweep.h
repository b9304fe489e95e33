/*
 * sweep: dead workers' connections leave (see sweep.c).
 */
#ifndef GC_HUB_SWEEP_H
#define GC_HUB_SWEEP_H

struct hub;

/* From the hub's cron: check the heartbeats, if leading and none is out. */
void	sweep_run(struct hub *h);

#endif
