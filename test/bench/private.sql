-- Data set of sql/PRIVATE.md: 20,000 users; 40,000 public rooms and
-- 160,000 private rooms interleaved in creation order; heavy user 1 is a
-- member of 5,000 private rooms spread over the whole order, typical user
-- 2 of 20; every private room has its owner and 3 other members.
-- psql -f test/bench/private.sql on a database migrated to 003.
INSERT INTO users (username, email, password_hash)
SELECT 'user' || i, 'user' || i || '@example.org', 'x'
FROM generate_series(1, 20000) i;
INSERT INTO rooms (id, name, private, owner_id)
SELECT 'r' || i, 'room ' || i, i % 5 <> 0, 3 + i % 19000
FROM generate_series(1, 200000) i;
INSERT INTO room_members (room_id, user_id, room_seq)
SELECT r.id, 3 + (r.seq + k * 4999) % 19990, r.seq
FROM rooms r, generate_series(0, 3) k WHERE r.private
ON CONFLICT DO NOTHING;
INSERT INTO room_members (room_id, user_id, room_seq)
SELECT id, 1, seq FROM rooms WHERE private AND seq % 32 = 1;
INSERT INTO room_members (room_id, user_id, room_seq)
SELECT id, 2, seq FROM rooms WHERE private AND seq % 8000 = 1;
ANALYZE;
