-- Photo ownership (no confused deputy), the app's own uploads in storage, and a least-privilege
-- role for the daemon's DATABASE_URL. docs/security.md explains the model.
--
-- The rule, in one sentence (monitor/storage/ownership.py states the same rule for the daemon,
-- and tests/test_photo_ownership.py runs both on one table of cases): an item's child_photo_path
-- names an object under uploads/{orders.user_id}/ of the item's own order, written as the
-- object key or as a Storage object URL of that key. Nothing else: not another user's folder,
-- not generated/ (another item's results), not catalog/ (the books), and not an order without a
-- user. A null path is allowed (the item then fails photo_missing).
--
-- Rows written before this migration are not checked (the triggers fire on insert and update
-- only); the daemon checks every path again before it reads it, and fails such an item with
-- photo_not_owned.

-- ---------------------------------------------------------------- the rule
-- Pure and immutable, so a policy can call it; executable by the app's role for that reason
-- alone (it reads nothing and writes nothing).
create or replace function photo_path_in_user_uploads(p_path text, p_user uuid)
returns boolean
language sql
immutable
as $$
    with key as (
        select case
                   -- A Storage object URL: {project}/storage/v1/object/{kind}/{bucket}/{key}.
                   when p_path ~ '^[A-Za-z][A-Za-z0-9+.-]*:'
                   then substring(p_path from
                        '^[^?#]*/storage/v1/object/(?:public|sign|authenticated)/[^/?#]+/([^?#]*)')
                   else p_path
               end as k
    )
    select coalesce(
               p_user is not null
               and split_part(k, '/', 1) = 'uploads'
               and split_part(k, '/', 2) = p_user::text
               and split_part(k, '/', 3) <> ''
               -- no empty, "." or ".." segment anywhere (the daemon refuses those as well)
               and k !~ '(^|/)\.{0,2}(/|$)',
               false)
      from key;
$$;

-- ---------------------------------------------------------------- every writer obeys it
-- security definer: the owner of the order is read whatever the writer may see of orders.
create or replace function _check_child_photo_owner()
returns trigger
language plpgsql
security definer
set search_path = public, pg_temp
as $$
begin
    if new.child_photo_path is not null
       and not photo_path_in_user_uploads(
               new.child_photo_path, (select o.user_id from orders o where o.id = new.order_id))
    then
        raise exception 'child_photo_path must be in the upload folder of the order''s user'
            using errcode = 'check_violation',
                  constraint = 'order_items_child_photo_owned';
    end if;
    return new;
end;
$$;

drop trigger if exists order_items_child_photo_owned on order_items;
create trigger order_items_child_photo_owned
    before insert or update of child_photo_path, order_id on order_items
    for each row execute function _check_child_photo_owner();

-- Handing an order to another user would point its items' photos at someone else's folder.
create or replace function _check_order_owner_change()
returns trigger
language plpgsql
security definer
set search_path = public, pg_temp
as $$
begin
    if exists (select 1 from order_items oi
                where oi.order_id = new.id
                  and oi.child_photo_path is not null
                  and not photo_path_in_user_uploads(oi.child_photo_path, new.user_id)) then
        raise exception 'the order''s items have photos of another user'
            using errcode = 'check_violation',
                  constraint = 'order_items_child_photo_owned';
    end if;
    return new;
end;
$$;

drop trigger if exists orders_user_keeps_item_photos on orders;
create trigger orders_user_keeps_item_photos
    before update of user_id on orders
    for each row when (new.user_id is distinct from old.user_id)
    execute function _check_order_owner_change();

grant execute on function photo_path_in_user_uploads(text, uuid) to authenticated;

-- ---------------------------------------------------------------- the app's insert policy
-- Redefined from 005_row_level_security.sql: adds the child_photo_path ownership check.
drop policy if exists order_items_insert_own on order_items;
create policy order_items_insert_own on order_items for insert to authenticated
    with check (
        generation_status = 'pending'
        and attempts = 0
        and claimed_by is null
        and (child_photo_path is null
             or photo_path_in_user_uploads(child_photo_path, (select auth.uid())))
        and exists (select 1 from orders o
                     where o.id = order_items.order_id
                       and o.user_id = (select auth.uid())
                       and o.payment_status = 'pending')
    );
-- The app has no UPDATE privilege on order_items at all (005 grants none): a parent who picks a
-- better photo replaces the object itself (storage upsert below), never the row's path.

-- ---------------------------------------------------------------- storage (Supabase only)
-- Supabase: "To allow overwriting files using the upsert functionality you will need to
-- additionally grant SELECT and UPDATE permissions" (supabase.com/docs/guides/storage/security/
-- access-control). 005 gave the app select and insert of uploads/{uid}/...; here update and
-- delete of the same objects, and nothing else (no update or delete of generated/ or catalog/).
do $$
begin
    if to_regclass('storage.objects') is null then
        return;
    end if;
    execute 'drop policy if exists book_monitor_replace_own_photo on storage.objects';
    execute $sql$
        create policy book_monitor_replace_own_photo on storage.objects
            for update to authenticated
            using (
                bucket_id = 'books'
                and split_part(name, '/', 1) = 'uploads'
                and split_part(name, '/', 2) = (select auth.uid())::text
            )
            with check (
                bucket_id = 'books'
                and split_part(name, '/', 1) = 'uploads'
                and split_part(name, '/', 2) = (select auth.uid())::text
            )
    $sql$;
    execute 'drop policy if exists book_monitor_delete_own_photo on storage.objects';
    execute $sql$
        create policy book_monitor_delete_own_photo on storage.objects
            for delete to authenticated
            using (
                bucket_id = 'books'
                and split_part(name, '/', 1) = 'uploads'
                and split_part(name, '/', 2) = (select auth.uid())::text
            )
    $sql$;
end
$$;

-- ---------------------------------------------------------------- least-privilege daemon role
-- book_monitor: what the daemon needs over DATABASE_URL, and nothing more: execute on the queue
-- functions and read on the catalog. The queue functions run as their owner (security definer,
-- with a fixed search_path), so the role needs no privilege on orders or order_items itself.
-- Operators create a login role that is a member (README, "Database role"):
--     create role book_monitor_daemon login password '...' in role book_monitor;
-- Migrations still run as the tables' owner (run_monitor.py migrate with the owner's URL).
do $$
begin
    if not exists (select from pg_roles where rolname = 'book_monitor') then
        create role book_monitor nologin;
    end if;
end
$$;

grant usage on schema public to book_monitor;
grant select on books, book_pages to book_monitor;
drop policy if exists books_read_daemon on books;
create policy books_read_daemon on books for select to book_monitor using (true);
drop policy if exists book_pages_read_daemon on book_pages;
create policy book_pages_read_daemon on book_pages for select to book_monitor using (true);

-- The daemon's functions run as their owner and are executable by book_monitor. `create or
-- replace` resets security definer and a dropped signature loses its grant, so every migration
-- that (re)defines a daemon function ends by passing its name here (every overload of each name is
-- covered); tests/test_least_privilege.py fails when a function the store calls is left out.
create or replace function _secure_daemon_functions(p_names text[])
returns void
language plpgsql
as $fn$
declare
    f record;
begin
    for f in
        select p.oid::regprocedure as signature
          from pg_proc p
         where p.pronamespace = 'public'::regnamespace
           and p.proname = any (p_names)
    loop
        execute format('alter function %s security definer set search_path = public, pg_temp',
                       f.signature);
        execute format('grant execute on function %s to book_monitor', f.signature);
    end loop;
end
$fn$;

select _secure_daemon_functions(array[
    'claim_order_items', 'heartbeat_order_item', 'set_order_item_progress',
    'checkpoint_order_item_page', 'complete_order_item', 'fail_order_item',
    'save_child_analysis', 'release_order_item', 'load_order_item_context',
    'expire_leases_of', 'retry_failed_order_item', 'order_queue_depth',
    'get_book_analysis', 'put_book_analysis',
    'items_due_for_photo_deletion', 'mark_photo_deleted',
    'record_order_item_usage', 'checkpoint_order_item_page_with_usage']);
