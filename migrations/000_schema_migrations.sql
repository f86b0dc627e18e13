-- Bookkeeping for `run_monitor.py migrate`. Applied before every run (it is idempotent), so the
-- runner itself needs no SQL of its own beyond calling these functions.

create table if not exists schema_migrations (
    version text primary key,
    checksum text not null,
    applied_at timestamptz not null default now()
);

create or replace function applied_migrations()
returns table (version text, checksum text)
language sql
stable
as $$
    select version, checksum from schema_migrations order by version;
$$;

create or replace function record_migration(p_version text, p_checksum text)
returns void
language sql
as $$
    insert into schema_migrations (version, checksum) values (p_version, p_checksum)
    on conflict (version) do update set checksum = excluded.checksum, applied_at = now();
$$;
