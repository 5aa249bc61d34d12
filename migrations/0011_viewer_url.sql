-- Issue 23: a server may say where its streamer serves viewers (`viewer_url`, an
-- http[s]://host[:port] origin), so a console can link the watch page and read the
-- streamer's status. NULL: not said (every server registered before this).
ALTER TABLE rm.servers ADD COLUMN viewer_url text;
