/*
 * fuzz_msg: libFuzzer target for common/msg.c's msg_entry_parse(), the
 * hub's reader of inbox entries (hostile: anyone with Redis access can
 * XADD). The input is split at 0x01 bytes into at most 32 fields, each a
 * NUL-terminated copy (content may hold NULs). A parsed entry must keep
 * the parser's promises.
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

#include "common/msg.h"

#define FUZZ_FIELDS	32
#define FUZZ_MAX	4096	/* max_ws_message */

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
