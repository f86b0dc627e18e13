-- Row-level security and privileges (docs/security.md explains the model).
--
-- Who is who:
--   anon           Supabase's not-signed-in role: gets nothing at all.
--   authenticated  a signed-in app user; auth.uid() is their id (orders.user_id). Reads their own
--                  orders, items, page checkpoints and notifications, reads the catalog, may add
--                  a pending item to their own unpaid order and mark their notifications read.
--   service_role   the daemon over PostgREST (SUPABASE_SERVICE_ROLE_KEY); BYPASSRLS. The daemon
--                  over DATABASE_URL connects as the tables' owner, which RLS does not restrict.
-- Every queue/catalog function is executable by service_role (and the owner) only: PostgREST
-- exposes every function of the API schema as RPC, so otherwise any app user could call
-- claim_order_items or complete_order_item with their own token.
--
-- Runs on Supabase and on a plain Postgres (004 creates the roles and auth.uid() there).

-- ---------------------------------------------------------------- RLS on every table of ours
alter table books enable row level security;
alter table book_pages enable row level security;
alter table orders enable row level security;
alter table order_items enable row level security;
alter table order_item_pages enable row level security;
alter table book_analyses enable row level security;
alter table notifications enable row level security;
alter table schema_migrations enable row level security;

-- ---------------------------------------------------------------- table privileges
-- Supabase's default privileges grant ALL on new public tables to anon and authenticated: take
-- everything back, then grant exactly what the policies below are written for.
revoke all on books, book_pages, orders, order_items, order_item_pages, book_analyses,
              notifications, schema_migrations
    from public, anon, authenticated;

grant select on books, book_pages to authenticated;
grant select on orders, order_items, order_item_pages, notifications to authenticated;
-- Column grants: the app writes only the personalization input of a new item; every generation
-- column (status, URLs, paths, progress, attempts, claim fields, errors) keeps its default.
grant insert (order_id, book_id, child_name, child_age, child_gender, child_photo_path)
    on order_items to authenticated;
grant update (read_at) on notifications to authenticated;

-- The daemon's PostgREST role (Supabase grants this already; a plain Postgres needs it).
grant select, insert, update, delete
    on books, book_pages, orders, order_items, order_item_pages, book_analyses,
       notifications, schema_migrations
    to service_role;

-- ---------------------------------------------------------------- policies
drop policy if exists books_read on books;
create policy books_read on books for select to authenticated using (true);

drop policy if exists book_pages_read on book_pages;
create policy book_pages_read on book_pages for select to authenticated using (true);

drop policy if exists orders_read_own on orders;
create policy orders_read_own on orders for select to authenticated
    using (user_id = (select auth.uid()));

drop policy if exists order_items_read_own on order_items;
create policy order_items_read_own on order_items for select to authenticated
    using (exists (select 1 from orders o
                    where o.id = order_items.order_id and o.user_id = (select auth.uid())));

-- A new item only in the user's own order that is not paid yet (adding an item to a paid order
-- would be a free book), and only as a fresh pending item.
drop policy if exists order_items_insert_own on order_items;
create policy order_items_insert_own on order_items for insert to authenticated
    with check (
        generation_status = 'pending'
        and attempts = 0
        and claimed_by is null
        and exists (select 1 from orders o
                     where o.id = order_items.order_id
                       and o.user_id = (select auth.uid())
                       and o.payment_status = 'pending')
    );

drop policy if exists order_item_pages_read_own on order_item_pages;
create policy order_item_pages_read_own on order_item_pages for select to authenticated
    using (exists (select 1 from order_items oi join orders o on o.id = oi.order_id
                    where oi.id = order_item_pages.order_item_id
                      and o.user_id = (select auth.uid())));

drop policy if exists notifications_read_own on notifications;
create policy notifications_read_own on notifications for select to authenticated
    using (user_id = (select auth.uid()));

drop policy if exists notifications_mark_read_own on notifications;
create policy notifications_mark_read_own on notifications for update to authenticated
    using (user_id = (select auth.uid()))
    with check (user_id = (select auth.uid()));

-- book_analyses and schema_migrations: RLS on, no policy, no grant: the daemon's alone.

-- ---------------------------------------------------------------- functions
-- New functions are executable by PUBLIC by default, and on Supabase also granted to anon and
-- authenticated. Close every function of ours in public (extension members are left alone) ...
do $$
declare
    f record;
begin
    for f in
        select p.oid::regprocedure as signature
          from pg_proc p
          join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'public'
           and p.prokind in ('f', 'p')
           and not exists (select 1 from pg_depend d
                            where d.classid = 'pg_proc'::regclass and d.objid = p.oid
                              and d.deptype = 'e')
    loop
        execute format('revoke execute on function %s from public, anon, authenticated', f.signature);
        execute format('grant execute on function %s to service_role', f.signature);
    end loop;
end
$$;

-- ... and every function the migration role creates from now on (later migrations). The grant
-- to PUBLIC is a global default, which a per-schema rule cannot take back, hence no "in schema".
alter default privileges revoke execute on functions from public;
alter default privileges in schema public revoke execute on functions from anon, authenticated;
alter default privileges in schema public grant execute on functions to service_role;

-- ---------------------------------------------------------------- storage (Supabase only)
-- Objects live in one private bucket (default "books"): the app uploads a child's photo under
-- uploads/{auth.uid()}/..., the daemon writes results under generated/{order_item_id}/... A user
-- reads only their own uploads and the results of their own items; the daemon uses the service
-- role. A plain Postgres has no storage schema, and this block does nothing there.
do $$
begin
    if to_regclass('storage.objects') is null then
        return;
    end if;
    if to_regclass('storage.buckets') is not null then
        execute $sql$
            insert into storage.buckets (id, name, public) values ('books', 'books', false)
            on conflict (id) do nothing
        $sql$;
    end if;
    execute 'drop policy if exists book_monitor_read_own_objects on storage.objects';
    execute $sql$
        create policy book_monitor_read_own_objects on storage.objects
            for select to authenticated
            using (
                bucket_id = 'books'
                and (
                    (split_part(name, '/', 1) = 'uploads'
                     and split_part(name, '/', 2) = (select auth.uid())::text)
                    or
                    (split_part(name, '/', 1) = 'generated'
                     and exists (select 1
                                   from public.order_items oi
                                   join public.orders o on o.id = oi.order_id
                                  where oi.id::text = split_part(name, '/', 2)
                                    and o.user_id = (select auth.uid())))
                )
            )
    $sql$;
    execute 'drop policy if exists book_monitor_upload_own_photo on storage.objects';
    execute $sql$
        create policy book_monitor_upload_own_photo on storage.objects
            for insert to authenticated
            with check (
                bucket_id = 'books'
                and split_part(name, '/', 1) = 'uploads'
                and split_part(name, '/', 2) = (select auth.uid())::text
            )
    $sql$;
end
$$;
