-- Chat protocol v2 (SPEC §9): edits and deletes as room events, client
-- message ids for idempotent resends, and read markers.
--
-- Every room event has a row in messages, in the room's one id sequence:
-- kind 0 a message, 1 an edit, 2 a delete; an edit or delete names its
-- target (a message of the same room) and an edit carries the new content
-- (a delete ''). The target row holds the current state: the hub's store
-- statement, in the statement that inserts the edit or delete, sets its
-- content and edited_at (the latest edit's) and deleted (once set, never
-- cleared), so history, resume and unread counts read one row a message.
ALTER TABLE messages
	ADD COLUMN kind		smallint NOT NULL DEFAULT 0
				CHECK (kind BETWEEN 0 AND 2),
	ADD COLUMN target	bigint,
	ADD COLUMN cid		text CHECK (char_length(cid) BETWEEN 1 AND 64),
	ADD COLUMN edited_at	timestamptz,
	ADD COLUMN deleted	boolean NOT NULL DEFAULT false,
	ADD CONSTRAINT messages_kind_target CHECK ((kind = 0) = (target IS NULL));

-- A send's client id: a resend by the same user to the same room within
-- 24 hours is acknowledged with the first message's id, nothing stored.
-- Not unique: the hub of the room's partition is the only writer and
-- checks in its store statement (NOT EXISTS over this index, and one per
-- (room, user, cid) within a batch), and a cid may be used again after
-- 24 hours.
CREATE INDEX messages_cid ON messages (room_id, user_id, cid)
	WHERE cid IS NOT NULL;

-- Read markers (the op "read"): the newest event id a user has read in a
-- room; it only moves up. getRooms counts up to 99 messages above it.
CREATE TABLE read_markers (
	user_id		bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	room_id		text NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
	last_read	bigint NOT NULL CHECK (last_read >= 0),
	PRIMARY KEY (user_id, room_id)
);
CREATE INDEX read_markers_room ON read_markers (room_id);
