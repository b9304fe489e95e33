-- Private rooms and direct messages (SPEC §10). A room has an owner (its
-- creator from this edition on; NULL before, and after the owner's
-- account is deleted), may be private, and may be the direct room of two
-- users. Private rooms have members; public rooms have none (anyone may
-- join them).
ALTER TABLE rooms
	ADD COLUMN private	boolean NOT NULL DEFAULT false,
	ADD COLUMN dm		boolean NOT NULL DEFAULT false,
	ADD COLUMN owner_id	bigint REFERENCES users (id) ON DELETE SET NULL,
	-- A direct room's pair, the lower id first. No foreign key: the room
	-- of a deleted user stays the other one's, and the pair stays taken.
	ADD COLUMN dm_low	bigint,
	ADD COLUMN dm_high	bigint,
	ADD CONSTRAINT rooms_dm_shape CHECK (NOT dm OR (private AND
	    owner_id IS NULL AND dm_low < dm_high));

-- One direct room per pair: concurrent POST /ws/dm/{id} calls of the pair
-- (on any instance) meet here, INSERT .. ON CONFLICT DO NOTHING.
CREATE UNIQUE INDEX rooms_dm_pair ON rooms (dm_low, dm_high) WHERE dm;
-- getRooms' public half: the public rooms in creation order.
CREATE INDEX rooms_public_seq ON rooms (seq) WHERE NOT private;

-- The members of private rooms. room_seq is the room's (immutable)
-- creation order, kept here so that a user's private rooms come in
-- getRooms' order from one index (room_members_user) however many rooms
-- the user is in; see sql/PRIVATE.md.
CREATE TABLE room_members (
	room_id		text NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
	user_id		bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	room_seq	bigint NOT NULL,
	PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_user ON room_members (user_id, room_seq);

-- The ids of deleted rooms, never given again: the hub may still hold a
-- deleted room's last messages in memory (its history ring), which a new
-- room of the same id would otherwise show to whoever joins it.
CREATE TABLE rooms_deleted (
	id		text PRIMARY KEY,
	deleted_at	timestamptz NOT NULL DEFAULT now()
);
