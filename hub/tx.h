/*
 * tx: the hub's Redis transaction, fenced by the leader lease (see tx.c).
 * One at a time: tx_begin(), commands, tx_commit().
 */
#ifndef GC_HUB_TX_H
#define GC_HUB_TX_H

#include <stddef.h>

#include "common/attr.h"
#include "common/bus.h"

struct evbuffer;
struct tx;

/* lease_key and lease_value (the caller's) must outlive the tx. */
struct tx *tx_new(struct bus *bus, const char *lease_key,
	    const char *lease_value);
void	tx_free(struct tx *t);

void	tx_begin(struct tx *t);
void	tx_command(struct tx *t, int argc, const char **argv,
	    const size_t *lens);
/* One event out on channel (counted in the metrics). */
void	tx_publish(struct tx *t, const char *channel,
	    struct evbuffer *payload);
/* Something the transaction needs could not be written: it will not be
 * sent (tx_commit() returns -1). */
void	tx_fail(struct tx *t);
/*
 * Send it: 0 when sent, and cb will get the reply (an array of the
 * errors of the commands Redis refused, empty when all were applied; an
 * error "LEASE ..." if the lease was not ours, then nothing was applied;
 * NULL if the connection went). 1 when the
 * transaction was empty: nothing was sent and cb will not be called. -1
 * when a command could not be queued or the script not sent: nothing is
 * applied, cb will not be called, and what the caller changed in memory
 * for it must be forgotten.
 */
int	tx_commit(struct tx *t, bus_cb *cb, void *arg) GC_MUSTCHECK;

#endif
