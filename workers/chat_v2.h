/*
 * chat_v2: the client side of protocol gochat.v2 (SPEC section 9) that
 * needs no loop: parsing and checking one client frame into a command,
 * and writing the events only this worker sends (error, gap). chat.c
 * does the commands; the fuzzer and the unit test link this alone.
 */
#ifndef GC_CHAT_V2_H
#define GC_CHAT_V2_H

#include <stddef.h>
#include <stdint.h>

#include "common/attr.h"

#define CHAT_V2_PROTOCOL	"gochat.v2"
#define CHAT_V2_CONTENT_MAX	4096	/* bytes of a message (SPEC 9) */
#define CHAT_V2_TYPING_MS	3000	/* one typing event per user per room
					 * per this long */

struct evbuffer;
struct json_doc;

enum chat_v2_op {
	CHAT_V2_NONE,		/* not known (an error) */
	CHAT_V2_SEND,
	CHAT_V2_EDIT,
	CHAT_V2_DELETE,
	CHAT_V2_TYPING,
	CHAT_V2_READ
};

/* The codes of an error event (SPEC section 9). */
enum chat_v2_code {
	CHAT_V2_OK,
	CHAT_V2_BAD_REQUEST,
	CHAT_V2_FORBIDDEN,
	CHAT_V2_NOT_FOUND,
	CHAT_V2_TOO_LONG,
	CHAT_V2_RATE_LIMITED,
	CHAT_V2_UNAVAILABLE
};

/* One client frame, parsed. Strings point into doc (owned). */
struct chat_v2_cmd {
	struct json_doc	*doc;
	enum chat_v2_op	 op;
	const char	*opname;	/* "op" as sent, or NULL */
	size_t		 opname_len;
	const char	*cid;		/* send: 1-64 characters; else any
					 * valid cid sent, for the error */
	size_t		 cid_len;
	const char	*content;	/* send, edit */
	size_t		 content_len;
	int64_t		 id;		/* edit, delete (>= 1); read (>= 0) */
	const char	*why;		/* the error's text */
};

/*
 * Parse the text frame buf (len bytes, valid UTF-8) into cmd: CHAT_V2_OK,
 * or the error's code with cmd->why (and what was understood of op and
 * cid). content_max: a message's bytes at most. Call chat_v2_cmd_free()
 * in either case.
 */
enum chat_v2_code chat_v2_parse(struct chat_v2_cmd *cmd, const char *buf,
	    size_t len, size_t content_max);
void	chat_v2_cmd_free(struct chat_v2_cmd *cmd);

/* "bad_request", ... */
const char *chat_v2_code_name(enum chat_v2_code code);

/*
 * {"type":"error","op":..,"cid":..,"code":..,"error":..[,"retryAfterMs"]}:
 * op and cid as cmd understood them (op null if none; cid left out if
 * none); retry_ms > 0 adds retryAfterMs.
 */
void	chat_v2_write_error(struct evbuffer *out, const struct chat_v2_cmd *cmd,
	    enum chat_v2_code code, const char *why, int64_t retry_ms);
/* {"type":"gap","roomId":..,"after":since,"before":first} */
void	chat_v2_write_gap(struct evbuffer *out, const char *room,
	    int64_t after, int64_t before);

#endif
