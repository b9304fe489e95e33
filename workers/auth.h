/*
 * auth: sessions, and the session check of routes that need a caller.
 * Sessions live in Redis, keyed by the SHA-256 of the token (so redis-cli
 * never shows a usable token):
 *	<prefix>session:<sha256 hex>	user id, expires after session_ttl
 *	<prefix>user:<id>:sessions	set of that user's session keys
 * Passwords are hashed and checked by passwd.c.
 */
#ifndef GC_AUTH_H
#define GC_AUTH_H

#include <stddef.h>
#include <stdint.h>

struct conn;
struct http_request;
struct route_match;
struct worker;

#define AUTH_TOKEN_MAX	64	/* longest token we accept */
#define AUTH_KEY_MAX	160	/* longest session key */

/* --- sessions ----------------------------------------------------------- */

/*
 * The request's token: "Authorization: Bearer <token>" first, else the
 * auth_token cookie. 1 found, 0 none, -1 present but malformed.
 */
int	auth_request_token(const struct http_request *req, char *out,
	    size_t outlen);
/* The Redis key of a token's session. */
void	auth_session_key(const struct worker *w, const char *token, char *key,
	    size_t keylen);

/*
 * A handler that runs for an authenticated caller. m is valid only during
 * the call: copy what an async continuation needs.
 */
typedef void auth_handler(struct conn *c, struct http_request *req,
	    const struct route_match *m, int64_t uid);

/*
 * Look the request's session up and run h with the user id; or answer 401
 * (no, malformed, unknown, expired or revoked token) or 503 (Redis away)
 * and not run h.
 */
void	auth_require(struct conn *c, struct http_request *req,
	    const struct route_match *m, auth_handler *h);

/*
 * Create a session for uid: a new token (256 bits, base64url) in token.
 * cb gets ok = 1 when it is stored. Returns -1 if Redis is away.
 */
typedef void auth_session_cb(int ok, void *arg);
int	auth_session_create(struct worker *w, int64_t uid, char *token,
	    size_t tokenlen, auth_session_cb *cb, void *arg)
	    __attribute__((warn_unused_result));
/* Revoke one session (logout) or all of a user's (account deletion). */
int	auth_session_revoke(struct worker *w, int64_t uid, const char *token,
	    auth_session_cb *cb, void *arg) __attribute__((warn_unused_result));
int	auth_session_revoke_all(struct worker *w, int64_t uid,
	    auth_session_cb *cb, void *arg) __attribute__((warn_unused_result));

/* The Set-Cookie header line(s) that set or clear the session cookie. */
void	auth_cookie_set(const struct worker *w, const char *token, char *out,
	    size_t outlen);
void	auth_cookie_clear(char *out, size_t outlen);

#endif
