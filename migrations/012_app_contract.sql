-- The app's side of the row contract (docs/app.md): a stable progress code next to the prose,
-- the expiry of the signed result URLs so a sweep can re-sign them before they die, and the two
-- tables the app watches in Supabase Realtime's publication.

-- ---------------------------------------------------------------- columns
-- current_step_code: a stable, translatable code for current_step (which stays, in English, for
-- apps that show it as is). Null until a worker first picks the item up.
alter table order_items add column if not exists current_step_code text;
-- urls_expire_at: when the signed pdf_url / cover_image_url stop working (the earlier of the two);
-- null when they do not expire (public bucket, local storage) or when nobody recorded it (items
-- completed before this migration), which the re-sign sweep treats as "re-sign now".
alter table order_items add column if not exists urls_expire_at timestamptz;

do $$
begin
    if not exists (select 1 from pg_constraint where conname = 'order_items_current_step_code_check') then
        -- The whole vocabulary, in one place; docs/app.md lists every value (a test checks it).
        alter table order_items add constraint order_items_current_step_code_check
            check (current_step_code in (
                -- written by the queue functions, through the trigger below
                'starting', 'waiting_to_retry', 'waiting_to_resume', 'waiting_to_start',
                'completed', 'failed',
                -- written by the pipeline with set_order_item_progress (monitor.job.StepCode)
                'analyzing', 'drawing_cover', 'drawing_page', 'binding', 'uploading'));
    end if;
end
$$;

-- The sweep only ever looks at completed items with a stored result.
create index if not exists order_items_urls_expire_idx
    on order_items (urls_expire_at nulls first)
    where generation_status = 'completed' and pdf_path is not null;

-- ---------------------------------------------------------------- the code of queue transitions
-- Every queue function that moves an item between states names generation_status in its SET list
-- (claim, complete, fail, release, operator retry, dead-letter), so one trigger gives each
-- transition its code, whatever prose the function writes. Progress inside 'processing' comes
-- with its code from the pipeline (set_order_item_progress), which does not fire this trigger.
create or replace function _order_item_step_code()
returns trigger
language plpgsql
as $$
begin
    if new.generation_status = 'completed' then
        new.current_step_code := 'completed';
    elsif new.generation_status = 'failed' then
        new.current_step_code := 'failed';
    elsif new.generation_status = 'processing' then
        -- A claim: from pending (attempts goes up) or of an expired lease (crash_count goes up,
        -- migrations/009); anything else keeps its code.
        if old.generation_status is distinct from 'processing' or new.attempts <> old.attempts
           or new.crash_count <> old.crash_count then
            new.current_step_code := 'starting';
        end if;
    elsif new.generation_status = 'pending' then
        if old.generation_status = 'failed' then
            new.current_step_code := 'waiting_to_start';   -- operator retry
        elsif old.generation_status = 'processing' then
            -- fail_order_item keeps the error code visible while it waits; a release has none.
            new.current_step_code := case when new.error_code is null then 'waiting_to_resume'
                                          else 'waiting_to_retry' end;
        end if;
    end if;
    return new;
end;
$$;

create or replace trigger order_items_step_code
    before update of generation_status on order_items
    for each row execute function _order_item_step_code();

-- ---------------------------------------------------------------- redefined queue functions
-- A new argument changes the signature, and create or replace would add an overload next to
-- the old one: the old signature is dropped first.
drop function if exists set_order_item_progress(uuid, text, integer, text, integer, jsonb);

-- Redefined from 009_queue_honesty.sql (which redefined 002's): adds the argument p_step_code
-- (text, default null, last) and writes it to current_step_code together with current_step (a
-- null code clears it, so code and prose never disagree); 009's ownership and payment check
-- (_lock_owned_paid_item) and never-decreasing progress are kept; nothing else changes.
create or replace function set_order_item_progress(
    p_item uuid,
    p_worker text,
    p_progress integer,
    p_step text,
    p_pages_total integer default null,
    p_usage jsonb default null,
    p_step_code text default null
)
returns boolean
language plpgsql
as $$
begin
    if _lock_owned_paid_item(p_item, p_worker) <> 'ok' then
        return false;
    end if;
    update order_items
       set progress = least(greatest(p_progress, progress, 0), 100),
           current_step = left(p_step, 200),
           current_step_code = p_step_code,
           pages_total = coalesce(p_pages_total, pages_total),
           ai_usage = coalesce(p_usage, ai_usage),
           updated_at = now()
     where id = p_item;
    return true;
end;
$$;

drop function if exists complete_order_item(uuid, text, text, text, text, text, jsonb);

-- Redefined from 009_queue_honesty.sql (which redefined 002's): adds the argument
-- p_urls_expire_at (timestamptz, default null, last) and writes it to urls_expire_at together
-- with the URLs; 009's ownership and payment check (_lock_owned_paid_item: an unpaid order fails
-- the item 'order_not_paid' and returns false) is kept; nothing else changes.
create or replace function complete_order_item(
    p_item uuid,
    p_worker text,
    p_pdf_path text,
    p_pdf_url text,
    p_cover_path text,
    p_cover_url text,
    p_usage jsonb default null,
    p_urls_expire_at timestamptz default null
)
returns boolean
language plpgsql
as $$
declare
    v_user_id uuid;
    v_title text;
begin
    if _lock_owned_paid_item(p_item, p_worker) <> 'ok' then
        return false;
    end if;
    update order_items oi
       set generation_status = 'completed',
           progress = 100,
           current_step = 'Your book is ready',
           pdf_path = p_pdf_path,
           pdf_url = p_pdf_url,
           cover_image_path = p_cover_path,
           cover_image_url = p_cover_url,
           urls_expire_at = p_urls_expire_at,
           generated_at = now(),
           ai_usage = coalesce(p_usage, oi.ai_usage),
           error_code = null,
           error_message = null,
           claimed_by = null,
           lease_expires_at = null,
           updated_at = now()
      from orders o
     where oi.id = p_item
       and o.id = oi.order_id
    returning o.user_id into v_user_id;
    select b.title into v_title
      from order_items oi join books b on b.id = oi.book_id
     where oi.id = p_item;
    insert into notifications (user_id, order_item_id, kind, title, body)
    values (v_user_id, p_item, 'book_ready', 'Your book is ready!',
            format('Your personalized copy of "%s" is ready to read.', coalesce(v_title, 'your book')));
    return true;
end;
$$;

-- Redefined from 008_expire_leases_of_restarted_worker.sql: also sets
-- current_step_code = 'waiting_to_resume' with the prose (the status stays 'processing', so the
-- transition trigger does not see it); nothing else changes.
create or replace function expire_leases_of(p_worker text)
returns integer
language sql
as $$
    with expired as (
        update order_items
           set lease_expires_at = now() - interval '1 millisecond',
               current_step = 'Waiting to resume',
               current_step_code = 'waiting_to_resume',
               updated_at = now()
         where claimed_by = p_worker
           and generation_status = 'processing'
           and lease_expires_at >= now()
        returning 1
    )
    select count(*)::integer from expired;
$$;

-- ---------------------------------------------------------------- re-signing result URLs
-- Completed items whose signed URLs expire within p_margin_seconds, or whose expiry is unknown,
-- soonest first. Only results under the item's own generated/{item id}/ folder are listed: that
-- is where the daemon writes them, and the only place the owner's storage policy covers.
-- p_skip: a JSON array of the ids of items this run could not sign (say, the PDF was deleted),
-- so they do not come back in every batch; the next run tries them again.
create or replace function items_with_expiring_urls(
    p_margin_seconds integer,
    p_limit integer,
    p_skip jsonb default '[]'
)
returns table (item_id uuid, pdf_path text, cover_image_path text)
language sql
stable
as $$
    select oi.id, oi.pdf_path, oi.cover_image_path
      from order_items oi
     where oi.generation_status = 'completed'
       and oi.pdf_path is not null  -- the partial index's predicate
       and (oi.urls_expire_at is null
            or oi.urls_expire_at < now() + make_interval(secs => p_margin_seconds))
       and starts_with(oi.pdf_path, 'generated/' || oi.id::text || '/')
       and starts_with(oi.cover_image_path, 'generated/' || oi.id::text || '/')
       and not (p_skip ? oi.id::text)
     order by oi.urls_expire_at nulls first, oi.id
     limit greatest(p_limit, 0);
$$;

-- Writes freshly signed URLs and their expiry; only the three URL columns (and updated_at)
-- change, and only while the item is still completed with the very paths that were signed.
create or replace function refresh_order_item_urls(
    p_item uuid,
    p_pdf_path text,
    p_pdf_url text,
    p_cover_path text,
    p_cover_url text,
    p_urls_expire_at timestamptz
)
returns boolean
language sql
as $$
    with updated as (
        update order_items
           set pdf_url = p_pdf_url,
               cover_image_url = p_cover_url,
               urls_expire_at = p_urls_expire_at,
               updated_at = now()
         where id = p_item
           and generation_status = 'completed'
           and pdf_path = p_pdf_path
           and cover_image_path = p_cover_path
        returning 1
    )
    select exists (select 1 from updated);
$$;

-- ---------------------------------------------------------------- Supabase Realtime
-- Postgres Changes only streams tables that are members of the supabase_realtime publication
-- (https://supabase.com/docs/guides/realtime/postgres-changes, "alter publication
-- supabase_realtime add table ..."). Each subscriber still receives only the rows its RLS
-- policies let it select (migration 005), so a parent sees their own items and notifications.
--
-- On a plain Postgres there is no Realtime: an empty publication of that name is created, as the
-- other stand-ins of 004 are, so the membership below is the same everywhere. Supabase is
-- recognised by its realtime schema; there an absent publication is left absent (Supabase
-- creates and owns it) and the step below does nothing.
do $$
begin
    if not exists (select 1 from pg_publication where pubname = 'supabase_realtime')
       and to_regnamespace('realtime') is null then
        create publication supabase_realtime;
    end if;
end
$$;

do $$
declare
    v_table text;
begin
    if not exists (select 1 from pg_publication
                    where pubname = 'supabase_realtime' and not puballtables) then
        return;  -- absent, or FOR ALL TABLES (which already holds every table)
    end if;
    foreach v_table in array array['order_items', 'notifications'] loop
        if not exists (select 1 from pg_publication_tables
                        where pubname = 'supabase_realtime'
                          and schemaname = 'public' and tablename = v_table) then
            execute format('alter publication supabase_realtime add table public.%I', v_table);
        end if;
    end loop;
end
$$;

-- Run as owner, executable by book_monitor (migrations/011).
select _secure_daemon_functions(array[
    'set_order_item_progress', 'complete_order_item', 'expire_leases_of',
    'items_with_expiring_urls', 'refresh_order_item_urls']);
