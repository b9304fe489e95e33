/*
 * sweep: dead workers' connections leave (see sweep.c).
 */
#ifndef GC_HUB_SWEEP_H
#define GC_HUB_SWEEP_H

struct part;

/* From the hub's cron: check the heartbeats of the workers with
 * connections in p's rooms, if p is led and no check is out. */
void	sweep_run(struct part *p);

#endif
