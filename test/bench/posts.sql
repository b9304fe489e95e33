-- pgbench reference for POST /posts: posts_create_sql of workers/api_posts.c
-- with $1 = a random bench user (ids :lo..:hi, set with -D) and $2 = the
-- same kind of content the wrk script sends. ':' written chr(58) as in
-- feed.sql.
\set uid random(:lo, :hi)
\set n random(1, 1000000000)
WITH p AS (INSERT INTO posts (user_id, content) VALUES (:uid, 'bench post ' || :n || ' from pgbench, a short sentence of ordinary length') RETURNING *) SELECT p.id, p.user_id, u.username, p.content, to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24' || chr(58) || 'MI' || chr(58) || 'SS.MS"Z"') FROM p JOIN users u ON u.id = p.user_id;
