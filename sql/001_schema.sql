-- GoChat schema: users, the follow graph, posts, rooms and chat messages.
-- Applied once by the migration child (see common/db.c: db_migrate) inside
-- a transaction, under an advisory lock.

-- People. Usernames and emails are unique whatever their case; the checks
-- repeat the rules of SPEC.md section 2 so that no path can store a bad row.
CREATE TABLE users (
	id		bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	username	text NOT NULL
			CHECK (username ~ '^[A-Za-z0-9_.-]{1,32}$'),
	email		text NOT NULL
			CHECK (octet_length(email) <= 254 AND email LIKE '%_@_%'),
	password_hash	text NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_username_lower ON users (lower(username));
CREATE UNIQUE INDEX users_email_lower ON users (lower(email));

-- Who follows whom (the original table name). Both directions are listed
-- highest user id first with keyset paging: the primary key serves
-- "following", the second index "followers".
CREATE TABLE user_followers (
	follower_id	bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	following_id	bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (follower_id, following_id),
	CHECK (follower_id <> following_id)
);
CREATE INDEX user_followers_following ON user_followers (following_id, follower_id);

-- Posts, newest first per author and in the feed: (user_id, id) lets the
-- feed walk each followed author's newest posts by index.
CREATE TABLE posts (
	id		bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	user_id		bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	content		text NOT NULL CHECK (char_length(content) BETWEEN 1 AND 1000),
	created_at	timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX posts_user_id ON posts (user_id, id DESC);

-- Chat rooms, listed in creation order (seq).
CREATE TABLE rooms (
	id		text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
	name		text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
	seq		bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
	created_by	bigint REFERENCES users (id) ON DELETE SET NULL,
	created_at	timestamptz NOT NULL DEFAULT now()
);

-- Chat history. Ids are the hub's, increasing per room. Messages outlive
-- their authors (no foreign key on user_id): the username is kept as it
-- was. inbox_id is the Redis stream entry the message came from, so a hub
-- that replays unacknowledged entries finds the id it already gave.
CREATE TABLE messages (
	room_id		text NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
	id		bigint NOT NULL,
	user_id		bigint NOT NULL,
	username	text NOT NULL,
	content		text NOT NULL,
	inbox_id	text UNIQUE,
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (room_id, id)
);
