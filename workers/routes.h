/*
 * routes: the route table of SPEC.md, written once. Each entry is
 * ROUTE(method, pattern, kind, handler), kind being OPEN (needs no caller),
 * USER (runs with the caller's user id), or OPEN_BODY / USER_BODY (the
 * same, and reads a request body). workers/api.c builds its table from
 * it; the HTTP fuzz target routes through the same patterns.
 */
#ifndef GC_ROUTES_H
#define GC_ROUTES_H

#define GC_ROUTES(ROUTE) \
	ROUTE(HTTP_M_GET, "/", OPEN, api_static) \
	ROUTE(HTTP_M_GET, "/health", OPEN, api_health) \
	ROUTE(HTTP_M_GET, "/metrics", OPEN, api_metrics) \
	ROUTE(HTTP_M_POST, "/register", OPEN_BODY, api_register) \
	ROUTE(HTTP_M_POST, "/login", OPEN_BODY, api_login) \
	ROUTE(HTTP_M_POST, "/logout", USER, api_logout) \
	ROUTE(HTTP_M_DELETE, "/delete", USER, api_delete) \
	ROUTE(HTTP_M_POST, "/follow", USER, api_follow) \
	ROUTE(HTTP_M_POST, "/unfollow", USER, api_unfollow) \
	ROUTE(HTTP_M_GET, "/me", USER, api_me) \
	ROUTE(HTTP_M_GET, "/users", USER, api_user_find) \
	ROUTE(HTTP_M_GET, "/users/{id}", USER, api_user_get) \
	ROUTE(HTTP_M_GET, "/users/{id}/followers", USER, api_followers) \
	ROUTE(HTTP_M_GET, "/users/{id}/following", USER, api_following) \
	ROUTE(HTTP_M_GET, "/users/{id}/posts", USER, api_user_posts) \
	ROUTE(HTTP_M_POST, "/posts", USER_BODY, api_post_create) \
	ROUTE(HTTP_M_GET, "/posts/{id}", USER, api_post_get) \
	ROUTE(HTTP_M_DELETE, "/posts/{id}", USER, api_post_delete) \
	ROUTE(HTTP_M_GET, "/feed", USER, api_feed) \
	ROUTE(HTTP_M_POST, "/ws/createRoom", USER_BODY, api_create_room) \
	ROUTE(HTTP_M_GET, "/ws/getRooms", USER, api_get_rooms) \
	ROUTE(HTTP_M_GET, "/ws/getClients/{roomId}", USER, api_get_clients) \
	ROUTE(HTTP_M_GET, "/ws/joinRoom/{roomId}", USER, api_join_room) \
	ROUTE(HTTP_M_GET, "/ws/history/{roomId}", USER, api_history) \
	ROUTE(HTTP_M_GET, "/ws/rooms/{roomId}", USER, api_room_get) \
	ROUTE(HTTP_M_DELETE, "/ws/rooms/{roomId}", USER, api_room_delete) \
	ROUTE(HTTP_M_GET, "/ws/rooms/{roomId}/members", USER, \
	    api_room_members) \
	ROUTE(HTTP_M_POST, "/ws/rooms/{roomId}/members", USER_BODY, \
	    api_room_member_add) \
	ROUTE(HTTP_M_DELETE, "/ws/rooms/{roomId}/members/{userId}", USER, \
	    api_room_member_remove) \
	ROUTE(HTTP_M_POST, "/ws/dm/{userId}", USER, api_dm)

#endif
