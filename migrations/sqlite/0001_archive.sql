-- SQLite. Times are TIMESTAMP columns holding RFC 3339 text in UTC
-- ("2026-11-22T10:03:00.400+00:00"), which julianday() and datetime() read.
-- A migration that has run is checked against its checksum at every
-- start: once released, this file never changes; a change is a new file
-- (0002_...) in all three directories, and a line in src/archive/db.rs.
-- The archive of meetingd, version 1: one schema for PostgreSQL, MySQL and
-- SQLite (this file is one of three, differing only in types).
-- Every row is keyed by what Redis gave it (ids; an event or message by its
-- stream id, <entry_ms>-<entry_seq>), so writing it again changes nothing.
-- source_ms/source_seq: the outbox entry that wrote the row last (a row is
-- only replaced by a later one).

CREATE TABLE users (
  user_id BIGINT NOT NULL PRIMARY KEY,
  name TEXT NOT NULL,
  age INTEGER NOT NULL,
  gender TEXT NOT NULL,
  email VARCHAR(254) NOT NULL,
  archived_at TIMESTAMP NOT NULL
);

CREATE TABLE meetings (
  meeting_id BIGINT NOT NULL PRIMARY KEY,
  title TEXT NOT NULL,
  description TEXT NOT NULL,
  is_public BOOLEAN NOT NULL,
  source_ms BIGINT NOT NULL,
  source_seq BIGINT NOT NULL
);

CREATE TABLE audience (
  meeting_id BIGINT NOT NULL,
  email VARCHAR(254) NOT NULL,
  in_audience BOOLEAN NOT NULL,
  source_ms BIGINT NOT NULL,
  source_seq BIGINT NOT NULL,
  PRIMARY KEY (meeting_id, email)
);

CREATE TABLE instances (
  meeting_id BIGINT NOT NULL,
  order_id BIGINT NOT NULL,
  starts_at TIMESTAMP NOT NULL,
  ends_at TIMESTAMP NOT NULL,
  ended_at TIMESTAMP NULL,
  archived_at TIMESTAMP NULL,
  source_ms BIGINT NOT NULL,
  source_seq BIGINT NOT NULL,
  PRIMARY KEY (meeting_id, order_id)
);

CREATE TABLE events (
  meeting_id BIGINT NOT NULL,
  order_id BIGINT NOT NULL,
  entry_ms BIGINT NOT NULL,
  entry_seq BIGINT NOT NULL,
  kind VARCHAR(8) NOT NULL,
  user_id BIGINT NOT NULL,
  happened_at TIMESTAMP NOT NULL,
  scheduled_end TIMESTAMP NULL,
  processed_at TIMESTAMP NULL,
  PRIMARY KEY (meeting_id, order_id, entry_ms, entry_seq)
);

CREATE TABLE messages (
  meeting_id BIGINT NOT NULL,
  order_id BIGINT NOT NULL,
  entry_ms BIGINT NOT NULL,
  entry_seq BIGINT NOT NULL,
  user_id BIGINT NOT NULL,
  posted_at TIMESTAMP NOT NULL,
  body TEXT NOT NULL,
  post_id VARCHAR(64) NULL,
  PRIMARY KEY (meeting_id, order_id, entry_ms, entry_seq)
);

CREATE TABLE attendance (
  meeting_id BIGINT NOT NULL,
  order_id BIGINT NOT NULL,
  user_id BIGINT NOT NULL,
  first_join TIMESTAMP NOT NULL,
  last_leave TIMESTAMP NULL,
  seconds_present DOUBLE PRECISION NOT NULL,
  joins INTEGER NOT NULL,
  messages INTEGER NOT NULL,
  PRIMARY KEY (meeting_id, order_id, user_id)
);

CREATE INDEX attendance_by_user ON attendance (user_id);
CREATE INDEX events_by_user ON events (user_id);
