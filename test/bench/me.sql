-- pgbench reference for GET /me: users_profile_by_id of workers/api_users.c
-- (USERS_PROFILE_SELECT ... WHERE u.id = $1) with $1 = a random bench user
-- (ids :lo..:hi, set with -D). The ':' of HH24:MI:SS is written chr(58)
-- because pgbench turns every ":NAME" into a variable (see feed.sql).
\set uid random(:lo, :hi)
SELECT u.id, u.username, u.email, (SELECT count(*) FROM user_followers f  WHERE f.following_id = u.id), (SELECT count(*) FROM user_followers f  WHERE f.follower_id = u.id), (SELECT count(*) FROM posts p WHERE p.user_id = u.id), to_char(u.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24' || chr(58) || 'MI' || chr(58) || 'SS.MS"Z"') FROM users u WHERE u.id = :uid;
