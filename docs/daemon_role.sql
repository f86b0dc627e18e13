-- A login role for the daemon's DATABASE_URL with only what it needs: membership in
-- book_monitor (migrations/011_photo_ownership.sql), i.e. execute on the queue functions and
-- read on the catalog. Run once as the database owner (Supabase: the SQL editor), with your own
-- password; migrations keep running as the owner.
create role book_monitor_daemon login password 'change-me' in role book_monitor;
