-- Minimal stand-ins for what Supabase provides, so the security migrations (005 onwards) run
-- unchanged on a plain Postgres (the demo's, the tests', a self-hosted one).
--
-- On Supabase every object below already exists and is left exactly as it is: roles are created
-- only when missing, and auth.uid() only when there is no such function (Supabase's own reads the
-- same request.jwt.claims setting that PostgREST sets for each request).

do $$
begin
    if not exists (select from pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
    end if;
    if not exists (select from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
    if not exists (select from pg_roles where rolname = 'service_role') then
        create role service_role nologin noinherit bypassrls;
    end if;
end
$$;

create schema if not exists auth;

do $$
begin
    if not exists (
        select 1
          from pg_proc p
          join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'auth' and p.proname = 'uid'
    ) then
        execute $fn$
            create function auth.uid() returns uuid
            language sql
            stable
            as $body$
                select nullif(
                    coalesce(
                        nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub',
                        nullif(current_setting('request.jwt.claim.sub', true), '')
                    ),
                    ''
                )::uuid
            $body$
        $fn$;
        -- The app's roles resolve auth.uid() inside policies. (Supabase grants this itself; its
        -- auth schema is not ours to change, so this only runs where the stand-in was created.)
        grant usage on schema auth to anon, authenticated, service_role;
        grant execute on function auth.uid() to anon, authenticated, service_role;
    end if;
end
$$;
