/*
 * msg: validation and parsing of the inbox entries workers (and operators
 * with redis-cli) add for the hub. Hostile input is expected here: an
 * entry comes from anyone who can reach Redis.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/json.h"
#include "common/msg.h"
#include "common/utf8.h"
#include "common/util.h"

#define MSG_ROOM_CHANNEL	"room:"

static const struct {
	const char	*name;
	enum msg_event	 ev;
} msg_events[] = {
	{ "message", MSG_EV_MESSAGE },
	{ "join", MSG_EV_JOIN },
	{ "leave", MSG_EV_LEAVE },
	{ "history", MSG_EV_HISTORY },
	{ "dropped", MSG_EV_DROPPED },
	{ "user_deleted", MSG_EV_USER_DELETED },
	{ "session_revoked", MSG_EV_SESSION_REVOKED },
	{ "member_removed", MSG_EV_MEMBER_REMOVED },
	{ "room_deleted", MSG_EV_ROOM_DELETED },
	{ "edit", MSG_EV_EDIT },
	{ "delete", MSG_EV_DELETE },
	{ "ack", MSG_EV_ACK },
	{ "typing", MSG_EV_TYPING },
	{ "read", MSG_EV_READ }
};

static int	msg_key(char *, size_t, const char *, const char *,
		    const char *, const char *);

static const char msg_room_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/*
 * CRC16-CCITT, polynomial 0x1021, initial value 0, no reflection: the
 * XMODEM variant. crc16("123456789") is 0x31c3, as in Redis Cluster's
 * specification. Bitwise: room ids are at most 64 bytes.
 */
uint16_t
msg_crc16(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint16_t crc = 0;

	for (size_t i = 0; i < len; i++) {
		crc ^= (uint16_t)(p[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) :
			    (uint16_t)(crc << 1);
	}
	return crc;
}

int
msg_partition(const char *room, int partitions)
{
	if (partitions <= 1)
		return 0;
	return msg_crc16(room, strlen(room)) % partitions;
}

int
msg_room_id_valid(const char *s, size_t len)
{
	if (len < 1 || len > MSG_ROOM_ID_MAX)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (s[i] == '\0' || strchr(msg_room_chars, s[i]) == NULL)
			return 0;
	return 1;
}

int
msg_entry_parse(struct msg_entry *e, const char *const *argv,
    const size_t *lens, size_t n, size_t max_content, char *err,
    size_t errlen)
{
	const char *op = NULL, *user = NULL, *conn = NULL, *history = NULL;
	const char *rejoin = NULL, *target = NULL;
	size_t room_len = 0, name_len = 0, cid_len = 0;
	long long v;

	memset(e, 0, sizeof(*e));
	e->history = -1;
	if (n % 2 != 0) {
		snprintf(err, errlen, "odd number of fields");
		return -1;
	}
	for (size_t i = 0; i < n; i += 2) {
		const char *k = argv[i], *val = argv[i + 1];

		/* Values are C strings: an embedded NUL is refused. */
		if (strlen(val) != lens[i + 1] && strcmp(k, "content") != 0) {
			snprintf(err, errlen, "field %s contains NUL", k);
			return -1;
		}
		if (strcmp(k, "op") == 0)
			op = val;
		else if (strcmp(k, "room") == 0) {
			e->room = val;
			room_len = lens[i + 1];
		} else if (strcmp(k, "worker") == 0)
			e->worker = val;
		else if (strcmp(k, "conn") == 0)
			conn = val;
		else if (strcmp(k, "user") == 0)
			user = val;
		else if (strcmp(k, "history") == 0)
			history = val;
		else if (strcmp(k, "rejoin") == 0)
			rejoin = val;
		else if (strcmp(k, "target") == 0)
			target = val;
		else if (strcmp(k, "cid") == 0) {
			e->cid = val;
			cid_len = lens[i + 1];
		}
		else if (strcmp(k, "username") == 0) {
			e->username = val;
			name_len = lens[i + 1];
		} else if (strcmp(k, "content") == 0) {
			e->content = val;
			e->content_len = lens[i + 1];
		}
	}
	if (op == NULL) {
		snprintf(err, errlen, "no op field");
		return -1;
	}
	if (strcmp(op, "register") == 0)
		e->op = MSG_REGISTER;
	else if (strcmp(op, "unregister") == 0)
		e->op = MSG_UNREGISTER;
	else if (strcmp(op, "broadcast") == 0)
		e->op = MSG_BROADCAST;
	else if (strcmp(op, "edit") == 0)
		e->op = MSG_EDIT;
	else if (strcmp(op, "delete") == 0)
		e->op = MSG_DELETE;
	else {
		snprintf(err, errlen, "unknown op '%.32s'", op);
		return -1;
	}
	if (e->room == NULL || !msg_room_id_valid(e->room, room_len)) {
		snprintf(err, errlen, "missing or invalid room");
		return -1;
	}
	if (e->username == NULL || name_len < 1 || name_len >
	    MSG_USERNAME_MAX || !utf8_valid(e->username, name_len)) {
		snprintf(err, errlen, "missing or invalid username");
		return -1;
	}
	if (user != NULL) {
		if (util_parse_int(user, 0, INT64_MAX, &v) == -1) {
			snprintf(err, errlen, "invalid user");
			return -1;
		}
		e->user = v;
	}
	if (conn != NULL) {
		if (util_parse_int(conn, 0, INT64_MAX, &v) == -1) {
			snprintf(err, errlen, "invalid conn");
			return -1;
		}
		e->conn = (uint64_t)v;
	}
	if (history != NULL) {
		if (util_parse_int(history, 0, INT64_MAX, &v) == -1) {
			snprintf(err, errlen, "invalid history");
			return -1;
		}
		e->history = v > MSG_HISTORY_MAX ? MSG_HISTORY_MAX : (int)v;
	}
	/* Absent (older workers) or "0": a join; "1": a re-register. */
	if (rejoin != NULL) {
		if (strcmp(rejoin, "0") != 0 && strcmp(rejoin, "1") != 0) {
			snprintf(err, errlen, "invalid rejoin");
			return -1;
		}
		e->rejoin = rejoin[0] == '1';
	}
	if (e->cid != NULL && (cid_len < 1 || cid_len > MSG_CID_MAX ||
	    !utf8_valid(e->cid, cid_len) ||
	    utf8_count(e->cid, cid_len) > MSG_CID_CHARS)) {
		snprintf(err, errlen, "invalid cid");
		return -1;
	}
	if (target != NULL) {
		if (util_parse_int(target, 1, INT64_MAX, &v) == -1) {
			snprintf(err, errlen, "invalid target");
			return -1;
		}
		e->target = v;
	}
	switch (e->op) {
	case MSG_EDIT:
	case MSG_DELETE:
		if (e->worker == NULL || conn == NULL || user == NULL ||
		    target == NULL) {
			snprintf(err, errlen, "%s needs worker, conn, user and "
			    "target", op);
			return -1;
		}
		if (e->op == MSG_DELETE) {
			e->content = NULL;
			e->content_len = 0;
			break;
		}
		/* FALLTHROUGH */
	case MSG_BROADCAST:
		if (e->content == NULL || e->content_len == 0 ||
		    e->content_len > max_content ||
		    !utf8_valid(e->content, e->content_len)) {
			snprintf(err, errlen, "missing, oversized or invalid "
			    "content");
			return -1;
		}
		break;
	case MSG_REGISTER:
	case MSG_UNREGISTER:
		if (e->worker == NULL || conn == NULL || user == NULL) {
			snprintf(err, errlen, "%s needs worker, conn and user",
			    op);
			return -1;
		}
		break;
	}
	return 0;
}

/* v in decimal. */
static void
msg_add_int(struct evbuffer *out, int64_t v)
{
	char buf[24], *p = buf + sizeof(buf);
	uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;

	do
		*--p = (char)('0' + u % 10);
	while ((u /= 10) != 0);
	if (v < 0)
		*--p = '-';
	(void)evbuffer_add(out, p, (size_t)(buf + sizeof(buf) - p));
}

void
msg_write_message(struct evbuffer *out, int64_t id, const char *room,
    int64_t user, const char *username, const char *content,
    size_t content_len, const char *ts, int history)
{
	msg_write_message_edited(out, id, room, user, username, content,
	    content_len, ts, NULL, history);
}

void
msg_write_message_edited(struct evbuffer *out, int64_t id, const char *room,
    int64_t user, const char *username, const char *content,
    size_t content_len, const char *ts, const char *edited, int history)
{
	/* Every chat message: no printf (a tenth of the hub's time). */
	(void)evbuffer_add(out, "{\"type\":\"message\",\"id\":", 23);
	msg_add_int(out, id);
	(void)evbuffer_add(out, ",\"roomId\":", 10);
	json_add_cstr(out, room);
	(void)evbuffer_add(out, ",\"userId\":", 10);
	msg_add_int(out, user);
	(void)evbuffer_add(out, ",\"username\":", 12);
	json_add_cstr(out, username);
	(void)evbuffer_add(out, ",\"content\":", 11);
	json_add_string(out, content, content_len);
	(void)evbuffer_add(out, ",\"ts\":", 6);
	json_add_cstr(out, ts);
	if (edited != NULL) {
		(void)evbuffer_add(out, ",\"edited\":", 10);
		json_add_cstr(out, edited);
	}
	if (history)
		(void)evbuffer_add(out, ",\"history\":true", 15);
	(void)evbuffer_add(out, "}", 1);
}

void
msg_write_change(struct evbuffer *out, int64_t id, const char *room,
    int64_t target, const char *content, size_t content_len, const char *ts,
    int history)
{
	(void)evbuffer_add_printf(out, "{\"type\":\"%s\",\"id\":%lld,"
	    "\"roomId\":", content != NULL ? "edit" : "delete", (long long)id);
	json_add_cstr(out, room);
	(void)evbuffer_add_printf(out, ",\"target\":%lld", (long long)target);
	if (content != NULL) {
		(void)evbuffer_add(out, ",\"content\":", 11);
		json_add_string(out, content, content_len);
	}
	(void)evbuffer_add(out, ",\"ts\":", 6);
	json_add_cstr(out, ts);
	if (history)
		(void)evbuffer_add(out, ",\"history\":true", 15);
	(void)evbuffer_add(out, "}", 1);
}

void
msg_write_ack(struct evbuffer *out, uint64_t conn, const char *room,
    const char *cid, int64_t id, const char *ts)
{
	(void)evbuffer_add(out, "{\"type\":\"ack\",", 14);
	if (conn != 0)
		(void)evbuffer_add_printf(out, "\"conn\":%llu,",
		    (unsigned long long)conn);
	(void)evbuffer_add(out, "\"roomId\":", 9);
	json_add_cstr(out, room);
	(void)evbuffer_add(out, ",\"cid\":", 7);
	json_add_cstr(out, cid);
	(void)evbuffer_add_printf(out, ",\"id\":%lld,\"ts\":", (long long)id);
	json_add_cstr(out, ts);
	(void)evbuffer_add(out, "}", 1);
}

void
msg_write_typing(struct evbuffer *out, const char *room, int64_t user,
    const char *username, const char *ts)
{
	msg_write_presence(out, "typing", room, user, username, ts);
}

void
msg_write_read(struct evbuffer *out, const char *room, int64_t id,
    int64_t user, const char *wid, uint64_t conn)
{
	(void)evbuffer_add(out, "{\"type\":\"read\",\"roomId\":", 24);
	json_add_cstr(out, room);
	(void)evbuffer_add_printf(out, ",\"id\":%lld", (long long)id);
	if (user > 0) {
		(void)evbuffer_add_printf(out, ",\"userId\":%lld,\"worker\":",
		    (long long)user);
		json_add_cstr(out, wid);
		(void)evbuffer_add_printf(out, ",\"conn\":%llu",
		    (unsigned long long)conn);
	}
	(void)evbuffer_add(out, "}", 1);
}

void
msg_write_presence(struct evbuffer *out, const char *type, const char *room,
    int64_t user, const char *username, const char *ts)
{
	(void)evbuffer_add(out, "{\"type\":", 8);
	json_add_cstr(out, type);
	(void)evbuffer_add(out, ",\"roomId\":", 10);
	json_add_cstr(out, room);
	(void)evbuffer_add_printf(out, ",\"userId\":%lld,\"username\":",
	    (long long)user);
	json_add_cstr(out, username);
	(void)evbuffer_add(out, ",\"ts\":", 6);
	json_add_cstr(out, ts);
	(void)evbuffer_add(out, "}", 1);
}

void
msg_write_history_head(struct evbuffer *out, uint64_t conn, const char *room,
    int64_t upto)
{
	(void)evbuffer_add_printf(out, "{\"type\":\"history\",\"conn\":%llu,"
	    "\"roomId\":", (unsigned long long)conn);
	json_add_cstr(out, room);
	(void)evbuffer_add_printf(out, ",\"upto\":%lld,\"messages\":[",
	    (long long)upto);
}

void
msg_write_dropped(struct evbuffer *out, int partition)
{
	(void)evbuffer_add_printf(out, "{\"type\":\"dropped\",\"partition\":"
	    "%d}", partition);
}

/* ---- names --------------------------------------------------------------- */

/* prefix, a, b and c end to end (b and c may be NULL). */
static int
msg_key(char *buf, size_t len, const char *prefix, const char *a,
    const char *b, const char *c)
{
	return snprintf(buf, len, "%s%s%s%s", prefix, a, b != NULL ? b : "",
	    c != NULL ? c : "");
}

static const char *const msg_names[] = {
	[MSG_INBOX] = "hub:inbox",
	[MSG_LEADER] = "hub:leader",
	[MSG_PRESENCE] = "hub:presence",
	[MSG_CONTROL] = "control",
	[MSG_HUBS] = "hub:hubs"
};

int
msg_key_name(char *buf, size_t len, const char *prefix, enum msg_name name)
{
	return msg_key(buf, len, prefix, msg_names[name], NULL, NULL);
}

int
msg_key_part(char *buf, size_t len, const char *prefix, enum msg_name name,
    int part, int partitions)
{
	if (partitions <= 1)
		return msg_key_name(buf, len, prefix, name);
	return snprintf(buf, len, "%s%s:%d", prefix, msg_names[name], part);
}

int
msg_key_inbox(char *buf, size_t len, const char *prefix, const char *room,
    int partitions)
{
	return msg_key_part(buf, len, prefix, MSG_INBOX,
	    msg_partition(room, partitions), partitions);
}

int
msg_key_room(char *buf, size_t len, const char *prefix, const char *room)
{
	return msg_key(buf, len, prefix, MSG_ROOM_CHANNEL, room, NULL);
}

int
msg_key_room_clients(char *buf, size_t len, const char *prefix,
    const char *room)
{
	return msg_key(buf, len, prefix, MSG_ROOM_CHANNEL, room, ":clients");
}

int
msg_key_worker(char *buf, size_t len, const char *prefix, const char *wid)
{
	return msg_key(buf, len, prefix, "worker:", wid, NULL);
}

int
msg_key_worker_alive(char *buf, size_t len, const char *prefix,
    const char *wid)
{
	return msg_key(buf, len, prefix, "worker:", wid, ":alive");
}

int
msg_key_session(char *buf, size_t len, const char *prefix, const char *hex)
{
	return msg_key(buf, len, prefix, "session:", hex, NULL);
}

int
msg_key_user_sessions(char *buf, size_t len, const char *prefix,
    int64_t user)
{
	return snprintf(buf, len, "%suser:%lld:sessions", prefix,
	    (long long)user);
}

int
msg_key_login_fail(char *buf, size_t len, const char *prefix,
    const char *kind, const char *subject)
{
	return snprintf(buf, len, "%slogin:fail:%s:%s", prefix, kind, subject);
}

int
msg_key_limit(char *buf, size_t len, const char *prefix, const char *what,
    const char *subject)
{
	return snprintf(buf, len, "%slimit:%s:%s", prefix, what, subject);
}

int
msg_key_stats(char *buf, size_t len, const char *prefix,
    const char *instance, long pid)
{
	return snprintf(buf, len, "%sstats:%s:%ld", prefix, instance, pid);
}

int
msg_key_typing(char *buf, size_t len, const char *prefix, const char *room,
    int64_t user)
{
	return snprintf(buf, len, "%styping:%s:%lld", prefix, room,
	    (long long)user);
}

int
msg_key_door_moved(char *buf, size_t len, const char *prefix, const char *id)
{
	return snprintf(buf, len, "%shub:door:%s", prefix, id);
}

const char *
msg_channel_room(const char *channel, const char *prefix)
{
	size_t n = strlen(prefix), r = sizeof(MSG_ROOM_CHANNEL) - 1;

	if (strncmp(channel, prefix, n) != 0 ||
	    strncmp(channel + n, MSG_ROOM_CHANNEL, r) != 0)
		return NULL;
	return channel + n + r;
}

int
msg_event_peek(const char *p, size_t len, enum msg_event *ev, int64_t *id)
{
	static const struct {
		const char	*front;
		size_t		 len;
		enum msg_event	 ev;
	} fronts[] = {
#define FRONT(t, e)	{ "{\"type\":\"" t "\",\"id\":", \
			    sizeof("{\"type\":\"" t "\",\"id\":") - 1, e }
		FRONT("message", MSG_EV_MESSAGE),
		FRONT("edit", MSG_EV_EDIT),
		FRONT("delete", MSG_EV_DELETE)
#undef FRONT
	};
	const char *end = p + len;
	int64_t n = 0;
	size_t i;

	if (len == 0 || p[len - 1] != '}')
		return -1;
	for (i = 0; i < sizeof(fronts) / sizeof(fronts[0]); i++)
		if (len > fronts[i].len &&
		    memcmp(p, fronts[i].front, fronts[i].len) == 0)
			break;
	if (i == sizeof(fronts) / sizeof(fronts[0]))
		return -1;
	/* 1 .. 10^18 - 1, no leading zero, then the next member. */
	p += fronts[i].len;
	if (p == end || *p < '1' || *p > '9')
		return -1;
	for (int digits = 0; p < end && *p >= '0' && *p <= '9'; p++) {
		if (++digits > 18)
			return -1;
		n = n * 10 + (*p - '0');
	}
	if (p == end || *p != ',')
		return -1;
	*ev = fronts[i].ev;
	*id = n;
	return 0;
}

enum msg_event
msg_event_type(const char *type)
{
	for (size_t i = 0; i < sizeof(msg_events) / sizeof(msg_events[0]);
	    i++)
		if (strcmp(type, msg_events[i].name) == 0)
			return msg_events[i].ev;
	return MSG_EV_UNKNOWN;
}
