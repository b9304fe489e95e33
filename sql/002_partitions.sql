-- Fencing of the hub by epoch (SPEC.md section 11). One row per partition
-- of the rooms (partition 0 alone while partitions = 1), created by the
-- first hub that leads it. A hub that takes a partition's lease raises its
-- epoch (an UPDATE, which waits for every store holding the row FOR SHARE
-- to finish); a store locks the row FOR SHARE in its own statement and
-- inserts nothing unless the epoch is still the one its hub raised it to.
-- So once a successor has raised the epoch, a deposed hub (paused past its
-- lease, cut off from Redis) can store nothing, whatever its clock says.
CREATE TABLE hub_partitions (
	partition	int PRIMARY KEY CHECK (partition >= 0 AND partition < 1024),
	epoch		bigint NOT NULL DEFAULT 1 CHECK (epoch > 0),
	holder		text NOT NULL,	-- the lease value: instance:pid
	taken_at	timestamptz NOT NULL DEFAULT now()
);

-- The hub stores a batch's messages in one statement and knows their rooms
-- exist, so the foreign key's per-row check (a lookup and a row lock per
-- message) buys nothing: the store statement instead locks each distinct
-- room of the batch once (FOR KEY SHARE) and inserts only the messages of
-- rooms it found; a room deleted meanwhile loses its messages, which the
-- hub drops as refused. Deleting a room still deletes its messages, by the
-- trigger below (as ON DELETE CASCADE did), so no message outlives its
-- room whatever deletes it.
ALTER TABLE messages DROP CONSTRAINT messages_room_id_fkey;

CREATE FUNCTION rooms_delete_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	DELETE FROM messages WHERE room_id = OLD.id;
	RETURN OLD;
END
$$;

CREATE TRIGGER rooms_delete_messages BEFORE DELETE ON rooms
	FOR EACH ROW EXECUTE PROCEDURE rooms_delete_messages();
