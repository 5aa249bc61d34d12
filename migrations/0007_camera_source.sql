-- Cameras (issue 6): a reservation may name a camera the streamer pulls instead of a
-- publisher that pushes. The read model shows which camera (its URL never holds user info)
-- and whether a login is stored; the login itself lives only sealed, in the events and the
-- slot messages, and is never shown.
ALTER TABLE rm.reservations
    ADD COLUMN camera_url       text,
    ADD COLUMN camera_transport text,
    ADD COLUMN camera_login     boolean NOT NULL DEFAULT false;
