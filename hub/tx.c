/*
 * tx: the hub's Redis transaction. Everything one batch (or one heartbeat
 * check) changes is queued here and sent as one script, which Redis runs
 * atomically: a hub killed half way leaves no event published without its
 * acknowledgement, and no presence half written. The script first checks
 * that the leader lease is still this hub's, and changes nothing if it is
 * not (fencing: a hub that lost its lease, whatever its clock says, can
 * neither publish nor acknowledge). rooms.c writes into it without seeing
 * the hub.
 */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/bus.h"
#include "common/metrics.h"
#include "hub/tx.h"

struct tx {
	struct bus	*bus;
	const char	*lease_key;	/* the caller's, for as long as tx */
	const char	*lease_value;
	int		 open;		/* tx_begin() called */
	int		 failed;	/* a command was not queued */
	size_t		 count;		/* commands queued */
	struct evbuffer	*args;		/* their arguments, end to end:
					 * "<argc>", argv... */
	size_t		*lens;		/* each argument's length */
	size_t		 nargs, cap;
};

/*
 * A batch's transaction, fenced: if the lease is still ours (KEYS[1] holds
 * ARGV[1]), run the commands ARGV[2..] one after the other and answer the
 * errors of those Redis refused, in order (an empty array: all applied);
 * a refused one does not undo the others. Else change nothing. A command
 * is "<argc>", argv..., or "P", channel, payload for a PUBLISH: most of a
 * batch, so they skip the generic unpack and their replies (numbers) are
 * not carried back.
 */
static const char tx_lua[] =
    "if redis.call('get', KEYS[1]) ~= ARGV[1] then "
    "return redis.error_reply('LEASE the leader lease is not ours') end "
    "local out, i, n, r = {}, 2, #ARGV "
    "while i <= n do "
    "if ARGV[i] == 'P' then "
    "r = redis.pcall('publish', ARGV[i + 1], ARGV[i + 2]) "
    "i = i + 3 "
    "else "
    "local argc = tonumber(ARGV[i]) "
    "r = redis.pcall(unpack(ARGV, i + 1, i + argc)) "
    "i = i + 1 + argc end "
    "if type(r) == 'table' and r.err then out[#out + 1] = r end end "
    "return out";
static int	tx_arg(struct tx *, const char *, size_t);
static void	tx_clear(struct tx *);

struct tx *
tx_new(struct bus *bus, const char *lease_key, const char *lease_value)
{
	struct tx *t;

	if ((t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	if ((t->args = evbuffer_new()) == NULL) {
		free(t);
		return NULL;
	}
	t->bus = bus;
	t->lease_key = lease_key;
	t->lease_value = lease_value;
	return t;
}

void
tx_free(struct tx *t)
{
	if (t == NULL)
		return;
	evbuffer_free(t->args);
	free(t->lens);
	free(t);
}

void
tx_fail(struct tx *t)
{
	t->failed = 1;
}

void
tx_begin(struct tx *t)
{
	tx_clear(t);
	t->open = 1;
}

void
tx_command(struct tx *t, int argc, const char **argv, const size_t *lens)
{
	char n[16];

	if (!t->open || t->failed)
		return;
	snprintf(n, sizeof(n), "%d", argc);
	if (tx_arg(t, n, strlen(n)) == -1)
		return;
	for (int i = 0; i < argc; i++)
		if (tx_arg(t, argv[i], lens != NULL ? lens[i] :
		    strlen(argv[i])) == -1)
			return;
	t->count++;
}

void
tx_publish(struct tx *t, const char *channel, struct evbuffer *payload)
{
	const char *data;

	if (!t->open || t->failed)
		return;
	if ((data = (const char *)evbuffer_pullup(payload, -1)) == NULL) {
		t->failed = 1;
		return;
	}
	if (tx_arg(t, "P", 1) == -1 || tx_arg(t, channel,
	    strlen(channel)) == -1 || tx_arg(t, data,
	    evbuffer_get_length(payload)) == -1)
		return;
	t->count++;
	metrics_count(MC_MSGS_OUT, 1);
}

int
tx_commit(struct tx *t, bus_cb *cb, void *arg)
{
	const char **argv = NULL;
	size_t *lens = NULL, n = t->nargs + 5, off = 0;
	const char *args;
	int rc = -1;

	if (t->failed)
		goto done;
	if (t->count == 0) {
		rc = 1;
		goto done;
	}
	if (n > INT_MAX || (argv = calloc(n, sizeof(*argv))) == NULL ||
	    (lens = calloc(n, sizeof(*lens))) == NULL ||
	    (args = (const char *)evbuffer_pullup(t->args, -1)) == NULL)
		goto done;
	argv[0] = "EVAL";
	argv[1] = tx_lua;
	argv[2] = "1";
	argv[3] = t->lease_key;
	argv[4] = t->lease_value;
	for (int i = 0; i < 5; i++)
		lens[i] = strlen(argv[i]);
	for (size_t i = 0; i < t->nargs; i++) {
		argv[5 + i] = args + off;
		lens[5 + i] = t->lens[i];
		off += t->lens[i];
	}
	rc = bus_commandv(t->bus, cb, arg, (int)n, argv, lens) == 0 ? 0 : -1;
done:
	free(argv);
	free(lens);
	tx_clear(t);
	return rc;
}

/* Queue one argument of the transaction; -1 (and tx_failed) if out of
 * memory. */
static int
tx_arg(struct tx *t, const char *s, size_t len)
{
	size_t cap, *p;

	if (t->nargs == t->cap) {
		cap = t->cap > 0 ? t->cap * 2 : 256;
		if ((p = realloc(t->lens, cap * sizeof(*p))) == NULL) {
			t->failed = 1;
			return -1;
		}
		t->lens = p;
		t->cap = cap;
	}
	if (evbuffer_add(t->args, s, len) == -1) {
		t->failed = 1;
		return -1;
	}
	t->lens[t->nargs++] = len;
	return 0;
}

static void
tx_clear(struct tx *t)
{
	t->open = 0;
	t->failed = 0;
	t->count = 0;
	t->nargs = 0;
	(void)evbuffer_drain(t->args, evbuffer_get_length(t->args));
}

