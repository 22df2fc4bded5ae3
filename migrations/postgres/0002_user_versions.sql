-- Version 2: users are archived as they are written (USER SET queues its
-- values in the partition's outbox), so a user row carries, like the other
-- admin rows, the outbox entry that wrote it last: a row is replaced only
-- by a later entry. Rows written before (from the user's hash, when an
-- instance they were in was archived) and rows still written so for users
-- no entry names, get 0, 0: any entry replaces them, they replace nothing.
-- Once released, this file never changes.

ALTER TABLE users ADD COLUMN source_ms BIGINT NOT NULL DEFAULT 0, ADD COLUMN source_seq BIGINT NOT NULL DEFAULT 0;
