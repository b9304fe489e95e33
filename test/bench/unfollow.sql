-- pgbench reference for POST /unfollow?toUnfollowId=<peer>: the statement
-- of api_unfollow() in workers/api_users.c, same users as follow.sql.
\set uid :lo + :client_id % :n
\set peer :lo + (:client_id + 1) % :n
WITH d AS (DELETE FROM user_followers WHERE follower_id = :uid AND following_id = :peer) SELECT id FROM users WHERE id = :peer;
