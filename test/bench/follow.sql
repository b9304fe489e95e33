-- pgbench reference for POST /follow?toFollowId=<peer>: the INSERT of
-- api_follow() in workers/api_users.c. Client c is bench user :lo + c and
-- follows the next bench user, as loadgen's connection c does with its own
-- token and %PEER% (the next token's user id); -D lo=.. -D n=<clients>.
\set uid :lo + :client_id % :n
\set peer :lo + (:client_id + 1) % :n
INSERT INTO user_followers (follower_id, following_id) VALUES (:uid, :peer) ON CONFLICT DO NOTHING;
