/*
 * chat_v2: the gochat.v2 command parser (SPEC section 9) and the events
 * only a worker writes. Pure: no loop, no I/O. Every frame is hostile:
 * anything but a JSON object with a known op and valid fields is an error
 * the client is told about, never a reason to close.
 */
#include "config.h"

#include <string.h>

#include <event2/buffer.h>

#include "common/json.h"
#include "common/msg.h"
#include "common/utf8.h"
#include "workers/chat_v2.h"

#define CHAT_V2_OPNAME_MAX	32	/* bytes of op echoed in an error */

static const struct {
	const char	*name;
	enum chat_v2_op	 op;
} chat_v2_ops[] = {
	{ "send", CHAT_V2_SEND },
	{ "edit", CHAT_V2_EDIT },
	{ "delete", CHAT_V2_DELETE },
	{ "typing", CHAT_V2_TYPING },
	{ "read", CHAT_V2_READ }
};

static const char *const chat_v2_codes[] = {
	[CHAT_V2_OK] = "ok",
	[CHAT_V2_BAD_REQUEST] = "bad_request",
	[CHAT_V2_FORBIDDEN] = "forbidden",
	[CHAT_V2_NOT_FOUND] = "not_found",
	[CHAT_V2_TOO_LONG] = "too_long",
	[CHAT_V2_RATE_LIMITED] = "rate_limited",
	[CHAT_V2_UNAVAILABLE] = "unavailable"
};

static enum chat_v2_code chat_v2_content(struct chat_v2_cmd *, size_t);
static enum chat_v2_code chat_v2_id(struct chat_v2_cmd *, int64_t);
static enum chat_v2_code chat_v2_bad(struct chat_v2_cmd *, const char *);

enum chat_v2_code
chat_v2_parse(struct chat_v2_cmd *cmd, const char *buf, size_t len,
    size_t content_max)
{
	const char *s;
	size_t n;
	enum chat_v2_code code;

	memset(cmd, 0, sizeof(*cmd));
	if ((cmd->doc = json_parse(buf, len)) == NULL)
		return chat_v2_bad(cmd, "a frame must hold one JSON object");
	if (json_get_string(cmd->doc, "cid", &s, &n) == JSON_OK && n > 0 &&
	    utf8_count(s, n) <= MSG_CID_CHARS) {
		cmd->cid = s;
		cmd->cid_len = n;
	}
	if (json_get_string(cmd->doc, "op", &s, &n) != JSON_OK)
		return chat_v2_bad(cmd, "op must be a string");
	cmd->opname = s;
	cmd->opname_len = n;
	for (size_t i = 0; i < sizeof(chat_v2_ops) / sizeof(chat_v2_ops[0]);
	    i++)
		if (strlen(chat_v2_ops[i].name) == n &&
		    memcmp(chat_v2_ops[i].name, s, n) == 0)
			cmd->op = chat_v2_ops[i].op;
	switch (cmd->op) {
	case CHAT_V2_NONE:
		return chat_v2_bad(cmd, "unknown op (send, edit, delete, "
		    "typing, read)");
	case CHAT_V2_SEND:
		if (json_get_string(cmd->doc, "cid", &s, &n) != JSON_OK ||
		    cmd->cid == NULL)
			return chat_v2_bad(cmd, "cid must be a string of 1 to "
			    "64 characters");
		return chat_v2_content(cmd, content_max);
	case CHAT_V2_EDIT:
		if ((code = chat_v2_id(cmd, 1)) != CHAT_V2_OK)
			return code;
		return chat_v2_content(cmd, content_max);
	case CHAT_V2_DELETE:
		return chat_v2_id(cmd, 1);
	case CHAT_V2_READ:
		return chat_v2_id(cmd, 0);
	case CHAT_V2_TYPING:
		break;
	}
	return CHAT_V2_OK;
}

void
chat_v2_cmd_free(struct chat_v2_cmd *cmd)
{
	json_free(cmd->doc);
	cmd->doc = NULL;
}

const char *
chat_v2_code_name(enum chat_v2_code code)
{
	return chat_v2_codes[code];
}

void
chat_v2_write_error(struct evbuffer *out, const struct chat_v2_cmd *cmd,
    enum chat_v2_code code, const char *why, int64_t retry_ms)
{
	(void)evbuffer_add(out, "{\"type\":\"error\",\"op\":", 21);
	if (cmd->opname != NULL)
		json_add_string(out, cmd->opname,
		    cmd->opname_len < CHAT_V2_OPNAME_MAX ? cmd->opname_len :
		    CHAT_V2_OPNAME_MAX);
	else
		(void)evbuffer_add(out, "null", 4);
	if (cmd->cid != NULL) {
		(void)evbuffer_add(out, ",\"cid\":", 7);
		json_add_string(out, cmd->cid, cmd->cid_len);
	}
	(void)evbuffer_add(out, ",\"code\":", 8);
	json_add_cstr(out, chat_v2_code_name(code));
	(void)evbuffer_add(out, ",\"error\":", 9);
	json_add_cstr(out, why);
	if (retry_ms > 0)
		(void)evbuffer_add_printf(out, ",\"retryAfterMs\":%lld",
		    (long long)retry_ms);
	(void)evbuffer_add(out, "}", 1);
}

void
chat_v2_write_gap(struct evbuffer *out, const char *room, int64_t after,
    int64_t before)
{
	(void)evbuffer_add(out, "{\"type\":\"gap\",\"roomId\":", 23);
	json_add_cstr(out, room);
	(void)evbuffer_add_printf(out, ",\"after\":%lld,\"before\":%lld}",
	    (long long)after, (long long)before);
}

/* ---- fields -------------------------------------------------------------- */

static enum chat_v2_code
chat_v2_bad(struct chat_v2_cmd *cmd, const char *why)
{
	cmd->why = why;
	return CHAT_V2_BAD_REQUEST;
}

/* content: 1 to content_max bytes of text (no NUL: json.c refuses it). */
static enum chat_v2_code
chat_v2_content(struct chat_v2_cmd *cmd, size_t content_max)
{
	switch (json_get_string(cmd->doc, "content", &cmd->content,
	    &cmd->content_len)) {
	case JSON_OK:
		break;
	case JSON_INVALID:
		return chat_v2_bad(cmd, "content must be text without NUL "
		    "characters");
	default:
		return chat_v2_bad(cmd, "content must be a string");
	}
	if (cmd->content_len == 0)
		return chat_v2_bad(cmd, "content must not be empty");
	if (cmd->content_len > content_max) {
		cmd->why = "content is too long";
		return CHAT_V2_TOO_LONG;
	}
	return CHAT_V2_OK;
}

/* id: an integer, min at least. */
static enum chat_v2_code
chat_v2_id(struct chat_v2_cmd *cmd, int64_t min)
{
	if (json_get_int(cmd->doc, "id", &cmd->id) != JSON_OK ||
	    cmd->id < min)
		return chat_v2_bad(cmd, min > 0 ? "id must be a message id" :
		    "id must be an event id (0 or more)");
	return CHAT_V2_OK;
}
