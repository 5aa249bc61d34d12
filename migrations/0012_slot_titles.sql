-- Issue 23: slot messages carry the reservation's title, which the streamer shows its viewers
-- (the watch page, status.json). The outbox keeps it beside each boundary, like the key and
-- the window, so every revision's messages carry it. NULL: no title, and every boundary
-- written before this migration (its messages go out without one, as before).
ALTER TABLE slot_boundaries ADD COLUMN title text;
