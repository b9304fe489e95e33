/* Unit tests of workers/chat_v2.c: the gochat.v2 command parser, table
 * driven (every op, every field rule, every error code it gives), and the
 * error and gap events it writes. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "workers/chat_v2.h"
#include "test/unit/tap.h"

static const struct {
	const char	*frame;
	enum chat_v2_code code;
	enum chat_v2_op	 op;
	int64_t		 id;
	const char	*cid;		/* expected, or NULL */
} cases[] = {
	{ "{\"op\":\"send\",\"content\":\"hi\",\"cid\":\"a1\"}", CHAT_V2_OK,
	    CHAT_V2_SEND, 0, "a1" },
	{ " {\"cid\":\"é\",\"content\":\"x\",\"op\":\"send\"} ", CHAT_V2_OK,
	    CHAT_V2_SEND, 0, "é" },
	{ "{\"op\":\"edit\",\"id\":5,\"content\":\"x\"}", CHAT_V2_OK,
	    CHAT_V2_EDIT, 5, NULL },
	{ "{\"op\":\"delete\",\"id\":1}", CHAT_V2_OK, CHAT_V2_DELETE, 1,
	    NULL },
	{ "{\"op\":\"typing\"}", CHAT_V2_OK, CHAT_V2_TYPING, 0, NULL },
	{ "{\"op\":\"read\",\"id\":0}", CHAT_V2_OK, CHAT_V2_READ, 0, NULL },
	{ "", CHAT_V2_BAD_REQUEST, CHAT_V2_NONE, 0, NULL },
	{ "hello", CHAT_V2_BAD_REQUEST, CHAT_V2_NONE, 0, NULL },
	{ "[\"op\"]", CHAT_V2_BAD_REQUEST, CHAT_V2_NONE, 0, NULL },
	{ "{\"op\":null}", CHAT_V2_BAD_REQUEST, CHAT_V2_NONE, 0, NULL },
	{ "{\"op\":\"Send\"}", CHAT_V2_BAD_REQUEST, CHAT_V2_NONE, 0, NULL },
	{ "{\"op\":\"send\",\"content\":\"x\"}", CHAT_V2_BAD_REQUEST,
	    CHAT_V2_SEND, 0, NULL },
	{ "{\"op\":\"send\",\"content\":\"x\",\"cid\":\"\"}",
	    CHAT_V2_BAD_REQUEST, CHAT_V2_SEND, 0, NULL },
	{ "{\"op\":\"send\",\"content\":\"\",\"cid\":\"k\"}",
	    CHAT_V2_BAD_REQUEST, CHAT_V2_SEND, 0, "k" },
	{ "{\"op\":\"send\",\"content\":\"a\\u0000\",\"cid\":\"k\"}",
	    CHAT_V2_BAD_REQUEST, CHAT_V2_SEND, 0, "k" },
	{ "{\"op\":\"send\",\"content\":[],\"cid\":\"k\"}",
	    CHAT_V2_BAD_REQUEST, CHAT_V2_SEND, 0, "k" },
	{ "{\"op\":\"edit\",\"content\":\"x\"}", CHAT_V2_BAD_REQUEST,
	    CHAT_V2_EDIT, 0, NULL },
	{ "{\"op\":\"edit\",\"id\":0,\"content\":\"x\"}", CHAT_V2_BAD_REQUEST,
	    CHAT_V2_EDIT, 0, NULL },
	{ "{\"op\":\"delete\",\"id\":-4}", CHAT_V2_BAD_REQUEST,
	    CHAT_V2_DELETE, 0, NULL },
	{ "{\"op\":\"read\",\"id\":-1}", CHAT_V2_BAD_REQUEST, CHAT_V2_READ,
	    0, NULL },
	{ "{\"op\":\"read\",\"id\":\"3\"}", CHAT_V2_BAD_REQUEST,
	    CHAT_V2_READ, 0, NULL },
};

static void
test_limits(void)
{
	struct chat_v2_cmd cmd;
	char *buf;
	size_t n;

	/* 64 characters of cid (2 bytes each) are fine, 65 are not. */
	buf = malloc(4096 * 2 + 128);
	n = (size_t)sprintf(buf, "{\"op\":\"send\",\"content\":\"x\",\"cid\":\"");
	for (int i = 0; i < 64; i++)
		n += (size_t)sprintf(buf + n, "é");
	strcpy(buf + n, "\"}");
	ok(chat_v2_parse(&cmd, buf, strlen(buf), 4096) == CHAT_V2_OK &&
	    cmd.cid_len == 128, "a cid of 64 characters");
	chat_v2_cmd_free(&cmd);
	strcpy(buf + n, "é\"}");
	ok(chat_v2_parse(&cmd, buf, strlen(buf), 4096) == CHAT_V2_BAD_REQUEST &&
	    cmd.cid == NULL, "a cid of 65 characters is refused");
	chat_v2_cmd_free(&cmd);
	/* content: up to the limit in bytes. */
	n = (size_t)sprintf(buf, "{\"op\":\"send\",\"cid\":\"c\",\"content\":\"");
	memset(buf + n, 'x', 4096);
	strcpy(buf + n + 4096, "\"}");
	ok(chat_v2_parse(&cmd, buf, strlen(buf), 4096) == CHAT_V2_OK &&
	    cmd.content_len == 4096, "4096 bytes of content");
	chat_v2_cmd_free(&cmd);
	ok(chat_v2_parse(&cmd, buf, strlen(buf), 4095) == CHAT_V2_TOO_LONG,
	    "one byte over: too_long");
	chat_v2_cmd_free(&cmd);
	free(buf);
}

static void
test_events(void)
{
	struct chat_v2_cmd cmd;
	struct evbuffer *b = evbuffer_new();
	char out[512];
	size_t n;

	(void)chat_v2_parse(&cmd, "{\"op\":\"send\",\"cid\":\"q\\\"1\"}", 26,
	    4096);
	chat_v2_write_error(b, &cmd, CHAT_V2_RATE_LIMITED, "slow down", 250);
	n = evbuffer_remove(b, out, sizeof(out) - 1);
	out[n] = '\0';
	ok(strcmp(out, "{\"type\":\"error\",\"op\":\"send\",\"cid\":\"q\\\"1\","
	    "\"code\":\"rate_limited\",\"error\":\"slow down\","
	    "\"retryAfterMs\":250}") == 0, "error event: %s", out);
	chat_v2_cmd_free(&cmd);
	(void)chat_v2_parse(&cmd, "nope", 4, 4096);
	chat_v2_write_error(b, &cmd, CHAT_V2_BAD_REQUEST, cmd.why, 0);
	n = evbuffer_remove(b, out, sizeof(out) - 1);
	out[n] = '\0';
	ok(strncmp(out, "{\"type\":\"error\",\"op\":null,\"code\":"
	    "\"bad_request\",\"error\":", 54) == 0,
	    "error without an op: %s", out);
	chat_v2_cmd_free(&cmd);
	chat_v2_write_gap(b, "lobby", 3, 40);
	n = evbuffer_remove(b, out, sizeof(out) - 1);
	out[n] = '\0';
	ok(strcmp(out, "{\"type\":\"gap\",\"roomId\":\"lobby\",\"after\":3,"
	    "\"before\":40}") == 0, "gap event: %s", out);
	evbuffer_free(b);
}

int
main(void)
{
	struct chat_v2_cmd cmd;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum chat_v2_code code = chat_v2_parse(&cmd, cases[i].frame,
		    strlen(cases[i].frame), 4096);

		ok(code == cases[i].code && cmd.op == cases[i].op &&
		    (code != CHAT_V2_OK || cmd.id == cases[i].id) &&
		    (code == CHAT_V2_OK) == (cmd.why == NULL) &&
		    (cases[i].cid == NULL ? cmd.cid == NULL : (cmd.cid != NULL &&
		    strcmp(cmd.cid, cases[i].cid) == 0)),
		    "%s -> %s", cases[i].frame, chat_v2_code_name(code));
		chat_v2_cmd_free(&cmd);
	}
	test_limits();
	test_events();
	return tap_done();
}
