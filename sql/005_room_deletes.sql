-- A room deleted while the hub stores its messages, without the store
-- locking every room of its batch (sql/002_partitions.sql had it lock each
-- distinct room FOR KEY SHARE: a heap write and a WAL record per room per
-- batch, about 1.7 us of PostgreSQL's 13 a message in rooms of 2).
--
-- Deleting a room now bumps rooms_gen on every partition's row before it
-- deletes the room's messages. The hub's store statement (hub/store.c)
-- reads its partition's rooms_gen in its snapshot, then locks the row FOR
-- SHARE on the condition that rooms_gen is still that value. So:
--  - a store that holds the row makes the deletion wait for its commit,
--    and the deletion's DELETE of the messages, a statement of its own,
--    sees and removes what that store inserted;
--  - a deletion that bumped rooms_gen first (committed, or still running:
--    the store waits for it) leaves the store's condition false, and the
--    store inserts nothing; the hub sees that its epoch still holds and
--    stores the batch again, in a snapshot where the room is gone;
--  - a deletion committed before the store's snapshot: the store does not
--    find the room, and inserts none of its messages.
-- The table lock keeps a partition's first row (the first hub to lead it)
-- from appearing between the bump and the commit, unbumped, and puts
-- concurrent deletions in a line. All of this is READ COMMITTED's (the
-- default, and GoChat's): each statement of the trigger sees what committed
-- before it began. Under REPEATABLE READ or SERIALIZABLE the DELETE of the
-- messages would not see a store that committed while it waited, so a
-- room's deletion refuses to run there. Room ids are never given again
-- (rooms_deleted), so nothing here depends on the id.
ALTER TABLE hub_partitions ADD COLUMN rooms_gen bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION rooms_delete_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION 'rooms are deleted in READ COMMITTED only'
			USING HINT = 'the hub''s stores may commit messages to '
			    'the room while this deletion waits for them';
	END IF;
	LOCK TABLE hub_partitions IN SHARE ROW EXCLUSIVE MODE;
	UPDATE hub_partitions SET rooms_gen = rooms_gen + 1;
	DELETE FROM messages WHERE room_id = OLD.id;
	RETURN OLD;
END
$$;
