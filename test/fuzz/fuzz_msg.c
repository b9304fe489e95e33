/*
 * fuzz_msg: libFuzzer target for common/msg.c's msg_entry_parse(), the
 * hub's reader of inbox entries (hostile: anyone with Redis access can
 * XADD). The input is split at 0x01 bytes into at most 32 fields, each a
 * NUL-terminated copy (content may hold NULs). A parsed entry must keep
 * the parser's promises.
 * The whole input is also a room event for msg_event_peek(), the workers'
 * reader of the hub's events: what it reads must agree with the JSON
 * parser wherever the input is JSON without a repeated "type" or "id"
 * (which member of a repeated name counts is the parser's choice).
 *
 *	clang -g -O1 -fsanitize=fuzzer,address,undefined -I. \
 *	    -o fuzz_msg test/fuzz/fuzz_msg.c common/msg.c common/json.c \
 *	    common/utf8.c common/util.c -levent_core
 *	./fuzz_msg test/fuzz/seeds/msg
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/msg.h"

#define FUZZ_FIELDS	32
#define FUZZ_MAX	4096	/* max_ws_message */

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static size_t	fuzz_count(const uint8_t *, size_t, const char *);
static void	fuzz_peek(const uint8_t *, size_t);

static void
fuzz_check(int cond)
{
	if (!cond)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy[FUZZ_FIELDS];
	const char *argv[FUZZ_FIELDS];
	size_t lens[FUZZ_FIELDS], n = 0, start = 0;
	struct msg_entry e;
	char err[128];

	fuzz_peek(data, size);
	for (size_t i = 0; i <= size && n < FUZZ_FIELDS; i++) {
		if (i < size && data[i] != 0x01)
			continue;
		lens[n] = i - start;
		if ((copy[n] = malloc(lens[n] + 1)) == NULL)
			goto done;
		memcpy(copy[n], data + start, lens[n]);
		copy[n][lens[n]] = '\0';
		argv[n] = copy[n];
		n++;
		start = i + 1;
	}
	if (msg_entry_parse(&e, argv, lens, n, FUZZ_MAX, err,
	    sizeof(err)) == 0) {
		fuzz_check(e.room != NULL && e.username != NULL);
		fuzz_check(e.rejoin == 0 || e.rejoin == 1);
		fuzz_check(e.history >= -1 && e.history <= MSG_HISTORY_MAX);
		fuzz_check(e.op != MSG_BROADCAST || (e.content != NULL &&
		    e.content_len > 0 && e.content_len <= FUZZ_MAX));
		fuzz_check(e.op == MSG_BROADCAST || e.worker != NULL);
	} else
		fuzz_check(memchr(err, '\0', sizeof(err)) != NULL);
done:
	for (size_t i = 0; i < n; i++)
		free(copy[i]);
	return 0;
}

/* How many times s occurs in data. */
static size_t
fuzz_count(const uint8_t *data, size_t size, const char *s)
{
	size_t n = 0, len = strlen(s);

	for (size_t i = 0; i + len <= size; i++)
		if (memcmp(data + i, s, len) == 0)
			n++;
	return n;
}

static void
fuzz_peek(const uint8_t *data, size_t size)
{
	struct json_doc *doc;
	enum msg_event ev;
	const char *type;
	int64_t id, jid;

	if (msg_event_peek((const char *)data, size, &ev, &id) == -1)
		return;
	fuzz_check(ev == MSG_EV_MESSAGE || ev == MSG_EV_EDIT ||
	    ev == MSG_EV_DELETE);
	fuzz_check(id > 0);
	if (fuzz_count(data, size, "\"type\"") != 1 ||
	    fuzz_count(data, size, "\"id\"") != 1)
		return;
	if ((doc = json_parse((const char *)data, size)) == NULL)
		return;
	fuzz_check(json_get_string(doc, "type", &type, NULL) == JSON_OK &&
	    msg_event_type(type) == ev);
	fuzz_check(json_get_int(doc, "id", &jid) == JSON_OK && jid == id);
	json_free(doc);
}
