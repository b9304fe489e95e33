/*
 * door: the operators' inbox <p>hub:inbox when partitions > 1 (see
 * door.c).
 */
#ifndef GC_HUB_DOOR_H
#define GC_HUB_DOOR_H

struct hub;
struct part;
struct door;

/* NULL if out of memory; with one partition the door is never opened. */
struct door *door_new(struct hub *h);
void	door_free(struct door *d);
/* p began leading (its presence is being rebuilt): if p is partition 0
 * of several, its leader forwards the door's entries from now on. */
void	door_lead(struct part *p);
/* Read the next entries, if partition 0 is ours and nothing is out (the
 * cron calls it too). */
void	door_advance(struct door *d);

#endif
