/*
 * fuzz_v2: libFuzzer target for workers/chat_v2.c's chat_v2_parse(), the
 * reader of gochat.v2 client frames (hostile: any client). The input is
 * one text frame as ws.c hands it over (valid UTF-8 only: others never
 * reach the parser). A parsed command must keep the parser's promises,
 * and the error event written for any outcome must be one JSON object.
 *
 *	clang -g -O1 -fsanitize=fuzzer,address,undefined -I. \
 *	    -o fuzz_v2 test/fuzz/fuzz_v2.c workers/chat_v2.c common/json.c \
 *	    common/utf8.c common/util.c -levent_core
 *	./fuzz_v2 test/fuzz/seeds/v2
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/json.h"
#include "common/msg.h"
#include "common/utf8.h"
#include "workers/chat_v2.h"

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
	const char *buf = (const char *)data;
	struct chat_v2_cmd cmd;
	enum chat_v2_code code;
	struct evbuffer *out;
	struct json_doc *doc;
	size_t len;

	if (!utf8_valid(buf, size))
		return 0;
	code = chat_v2_parse(&cmd, buf, size, FUZZ_MAX);
	if (code == CHAT_V2_OK) {
		fuzz_check(cmd.op != CHAT_V2_NONE && cmd.why == NULL);
		if (cmd.op == CHAT_V2_SEND)
			fuzz_check(cmd.cid != NULL && cmd.cid_len > 0 &&
			    utf8_count(cmd.cid, cmd.cid_len) <= MSG_CID_CHARS);
		if (cmd.op == CHAT_V2_SEND || cmd.op == CHAT_V2_EDIT)
			fuzz_check(cmd.content != NULL &&
			    cmd.content_len > 0 && cmd.content_len <= FUZZ_MAX &&
			    memchr(cmd.content, '\0', cmd.content_len) == NULL &&
			    utf8_valid(cmd.content, cmd.content_len));
		if (cmd.op == CHAT_V2_EDIT || cmd.op == CHAT_V2_DELETE)
			fuzz_check(cmd.id >= 1);
		if (cmd.op == CHAT_V2_READ)
			fuzz_check(cmd.id >= 0);
	} else
		fuzz_check(cmd.why != NULL && code != CHAT_V2_FORBIDDEN &&
		    code != CHAT_V2_NOT_FOUND);
	/* Whatever came in, the error event is one JSON object. */
	if ((out = evbuffer_new()) != NULL) {
		chat_v2_write_error(out, &cmd, code == CHAT_V2_OK ?
		    CHAT_V2_UNAVAILABLE : code, cmd.why != NULL ? cmd.why : "x",
		    7);
		len = evbuffer_get_length(out);
		doc = json_parse((const char *)evbuffer_pullup(out, -1), len);
		fuzz_check(doc != NULL);
		json_free(doc);
		evbuffer_free(out);
	}
	chat_v2_cmd_free(&cmd);
	return 0;
}
