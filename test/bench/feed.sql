-- pgbench reference for GET /feed: posts_feed_sql of workers/api_posts.c
-- with $1 = a random bench user (ids :lo..:hi, set with -D), $2 = before
-- (2^63-1: the first page) and $3 = limit (50, the API's default).
-- pgbench turns every ":NAME" into a variable, even inside to_char's format
-- string, so the ':' of HH24:MI:SS is written chr(58) (sql/FEED.md).
\set uid random(:lo, :hi)
SELECT p.id, p.user_id, u.username, p.content, to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24' || chr(58) || 'MI' || chr(58) || 'SS.MS"Z"') FROM (SELECT x.id FROM (SELECT following_id AS uid FROM user_followers WHERE follower_id = :uid UNION ALL SELECT :uid::bigint) a CROSS JOIN LATERAL (SELECT id FROM posts WHERE user_id = a.uid AND id < 9223372036854775807 ORDER BY id DESC LIMIT 50) x ORDER BY x.id DESC LIMIT 50) t JOIN posts p ON p.id = t.id JOIN users u ON u.id = p.user_id ORDER BY p.id DESC;
