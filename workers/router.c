/*
 * router: owns the matching of a decoded path against the route table:
 * {name} parameters, the "/v1" alias, HEAD served by GET routes, and the
 * 404/405 decision with its Allow list. The table is the caller's; nothing
 * here allocates.
 */
#include <string.h>

#include "workers/router.h"

static int	router_try(const char *pat, const char *path,
	    char params[ROUTE_MAX_PARAMS][ROUTE_PARAM_MAX], int *nparams);
static void	router_allow(unsigned int mask, char *buf, size_t len);

/* The order of the Allow list, whatever the order of the table. */
static const struct {
	enum http_method_id	 id;
	const char		*name;
} router_methods[] = {
	{ HTTP_M_GET,		"GET" },
	{ HTTP_M_HEAD,		"HEAD" },
	{ HTTP_M_POST,		"POST" },
	{ HTTP_M_PUT,		"PUT" },
	{ HTTP_M_PATCH,		"PATCH" },
	{ HTTP_M_DELETE,	"DELETE" },
	{ HTTP_M_OPTIONS,	"OPTIONS" },
};

enum router_result
router_match(const struct route *routes, enum http_method_id method,
    const char *path, struct route_match *m)
{
	const struct route	*rt, *head_via_get = NULL;
	unsigned int		 allowed = 0;

	m->route = NULL;
	m->path_route = NULL;
	m->nparams = 0;
	m->allow[0] = '\0';
	if (strcmp(path, "/v1") == 0)
		path = "/";
	else if (strncmp(path, "/v1/", 4) == 0)
		path += 3;

	for (rt = routes; rt->pattern != NULL; rt++) {
		/* HTTP_M_OTHER names no method: such a route never answers. */
		if (rt->method == HTTP_M_OTHER || rt->method > HTTP_M_OPTIONS)
			continue;
		if (!router_try(rt->pattern, path, m->params, &m->nparams))
			continue;
		if (rt->method == method) {
			m->route = rt;
			return ROUTER_FOUND;
		}
		if (m->path_route == NULL)
			m->path_route = rt;
		if (method == HTTP_M_HEAD && rt->method == HTTP_M_GET &&
		    head_via_get == NULL)
			head_via_get = rt;
		allowed |= 1u << rt->method;
		if (rt->method == HTTP_M_GET)
			allowed |= 1u << HTTP_M_HEAD;
	}
	if (head_via_get != NULL) {
		/* A later pattern may have overwritten the parameters. */
		router_try(head_via_get->pattern, path, m->params,
		    &m->nparams);
		m->route = head_via_get;
		return ROUTER_FOUND;
	}
	m->nparams = 0;
	if (allowed == 0)
		return ROUTER_NOT_FOUND;
	router_allow(allowed, m->allow, sizeof(m->allow));
	return ROUTER_BAD_METHOD;
}

const char *
router_param(const struct route_match *m, const char *name)
{
	const char	*p, *close;
	size_t		 nlen = strlen(name);
	int		 i = 0;

	if (m->route == NULL)
		return NULL;
	for (p = m->route->pattern; (p = strchr(p, '{')) != NULL; p = close) {
		if ((close = strchr(p, '}')) == NULL || i >= m->nparams)
			return NULL;
		if ((size_t)(close - p - 1) == nlen &&
		    memcmp(p + 1, name, nlen) == 0)
			return m->params[i];
		i++;
	}
	return NULL;
}

/* --- internal ------------------------------------------------------------ */

/*
 * Match path against pattern, filling params. A parameter is one or more
 * bytes up to the next '/', so "/users/{id}" does not match "/users/" nor
 * "/users/1/x"; one of ROUTE_PARAM_MAX bytes or more does not match at all.
 */
static int
router_try(const char *pat, const char *path,
    char params[ROUTE_MAX_PARAMS][ROUTE_PARAM_MAX], int *nparams)
{
	const char	*close;
	size_t		 len;
	int		 n = 0;

	for (;;) {
		if (*pat == '{') {
			if ((close = strchr(pat, '}')) == NULL)
				return 0;
			len = strcspn(path, "/");
			if (len == 0 || len >= ROUTE_PARAM_MAX ||
			    n == ROUTE_MAX_PARAMS)
				return 0;
			memcpy(params[n], path, len);
			params[n][len] = '\0';
			n++;
			pat = close + 1;
			path += len;
			continue;
		}
		if (*pat != *path)
			return 0;
		if (*pat == '\0')
			break;
		pat++;
		path++;
	}
	*nparams = n;
	return 1;
}

static void
router_allow(unsigned int mask, char *buf, size_t len)
{
	size_t	i, o = 0, n;

	buf[0] = '\0';
	for (i = 0; i < sizeof(router_methods) / sizeof(router_methods[0]);
	    i++) {
		if (!(mask & 1u << router_methods[i].id))
			continue;
		n = strlen(router_methods[i].name);
		if (o + n + 3 > len)
			break;
		if (o > 0) {
			memcpy(buf + o, ", ", 2);
			o += 2;
		}
		memcpy(buf + o, router_methods[i].name, n + 1);
		o += n;
	}
}
