-- Issue 15: a drawing is saved before its quality judge, so a kill -9 while it is being judged
-- does not pay for it again (docs/architecture.md, "Data flow").
--
-- A draft is the latest drawing of a page (0 = cover) that passed the output checks: uploaded to
-- the page's own result path, then recorded here with how many redraws came before it, the model
-- and the SHA-256 of its bytes. A resumed attempt judges the stored drawing instead of drawing
-- again; the hash tells whether the object is the recorded drawing or the next one, uploaded just
-- before a crash and never recorded. A page's checkpoint (order_item_pages) deletes its draft.
--
-- New: the table, save_order_item_page_draft. Redefined: checkpoint_order_item_page (009)
-- deletes the page's draft; load_order_item_context (002) returns the drafts; items_due_for_photo_deletion (019) and
-- mark_photo_deleted (006) delete drafted drawings too, as they show the child;
-- retry_failed_order_item (009) drops the drafts, so an operator's retry draws afresh instead of
-- judging the drawing that failed again.

create table if not exists order_item_page_drafts (
    order_item_id uuid not null references order_items (id) on delete cascade,
    page_number integer not null check (page_number >= 0),
    image_path text not null,
    redraws integer not null check (redraws >= 0),
    model text,
    sha256 text not null check (sha256 ~ '^[0-9a-f]{64}$'),
    created_at timestamptz not null default now(),
    primary key (order_item_id, page_number)
);

-- The daemon's alone: RLS on, no policy, no grant to the app's roles (as book_analyses, 005).
alter table order_item_page_drafts enable row level security;
revoke all on order_item_page_drafts from public;
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        execute 'revoke all on order_item_page_drafts from anon, authenticated';
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        execute 'grant select, insert, update, delete on order_item_page_drafts to service_role';
    end if;
end
$$;

-- Records the latest drawing of a page with the item's usage so far, in one transaction. Fenced
-- like a checkpoint: false, and nothing written, unless the caller owns the processing item of a
-- paid order (_lock_owned_paid_item, 009).
create or replace function save_order_item_page_draft(
    p_item uuid,
    p_worker text,
    p_page_number integer,
    p_image_path text,
    p_redraws integer,
    p_model text,
    p_sha256 text,
    p_usage jsonb default null
)
returns boolean
language plpgsql
as $$
begin
    if _lock_owned_paid_item(p_item, p_worker) <> 'ok' then
        return false;
    end if;
    insert into order_item_page_drafts (order_item_id, page_number, image_path, redraws, model,
                                        sha256)
    values (p_item, p_page_number, p_image_path, p_redraws, p_model, p_sha256)
    on conflict (order_item_id, page_number) do update
        set image_path = excluded.image_path,
            redraws = excluded.redraws,
            model = excluded.model,
            sha256 = excluded.sha256,
            created_at = now();
    return record_order_item_usage(p_item, p_worker, p_usage);
end;
$$;

-- Redefined from 009_queue_honesty.sql: the page's draft is deleted with its checkpoint (the
-- variants with usage and verdict, 010 and 014, call this one). Nothing else changes.
create or replace function checkpoint_order_item_page(
    p_item uuid,
    p_worker text,
    p_page_number integer,
    p_image_path text,
    p_prompt_version text default null,
    p_model text default null
)
returns boolean
language plpgsql
as $$
begin
    if _lock_owned_paid_item(p_item, p_worker) <> 'ok' then
        return false;
    end if;
    insert into order_item_pages (order_item_id, page_number, image_path, prompt_version, model)
    values (p_item, p_page_number, p_image_path, p_prompt_version, p_model)
    on conflict (order_item_id, page_number) do update
        set image_path = excluded.image_path,
            prompt_version = excluded.prompt_version,
            model = excluded.model,
            created_at = now();
    delete from order_item_page_drafts
     where order_item_id = p_item
       and page_number = p_page_number;
    update order_items
       set pages_done = (select count(*) from order_item_pages
                          where order_item_id = p_item and page_number > 0),
           updated_at = now()
     where id = p_item;
    return true;
end;
$$;

-- Redefined from 002_queue.sql: 'drafts' added.
create or replace function load_order_item_context(p_item uuid, p_worker text)
returns jsonb
language sql
stable
as $$
    select jsonb_build_object(
        'item', to_jsonb(oi),
        'order', jsonb_build_object('id', o.id, 'user_id', o.user_id,
                                    'payment_status', o.payment_status),
        'book', (select to_jsonb(b) from books b where b.id = oi.book_id),
        'pages', coalesce((select jsonb_agg(to_jsonb(p) order by p.page_number)
                             from book_pages p where p.book_id = oi.book_id), '[]'::jsonb),
        'checkpoints', coalesce((select jsonb_agg(to_jsonb(c) order by c.page_number)
                                   from order_item_pages c where c.order_item_id = oi.id), '[]'::jsonb),
        'drafts', coalesce((select jsonb_agg(to_jsonb(d) order by d.page_number)
                              from order_item_page_drafts d where d.order_item_id = oi.id),
                           '[]'::jsonb)
    )
      from order_items oi
      join orders o on o.id = oi.order_id
     where oi.id = p_item
       and oi.claimed_by = p_worker
       and oi.generation_status = 'processing';
$$;

-- Redefined from 019: drafted page drawings are offered for deletion like checkpointed ones (a
-- page that failed its judge for good has a draft and no checkpoint), under the same rule: only
-- under the item's own generated/{item id}/ folder. Nothing else changes.
create or replace function items_due_for_photo_deletion(p_days integer, p_limit integer)
returns table (item_id uuid, paths text[])
language sql
stable
as $$
    with due as (
        select oi.id, oi.child_photo_path, oi.cover_image_path, oi.pdf_path, o.user_id
          from order_items oi
          join orders o on o.id = oi.order_id
         where oi.generation_status in ('completed', 'failed')
           and oi.photo_deleted_at is null
           and coalesce(oi.generated_at, oi.updated_at) < now() - make_interval(days => p_days)
         order by coalesce(oi.generated_at, oi.updated_at), oi.id
         limit greatest(p_limit, 0)
    )
    select d.id,
           array(
               select p from (
                   select d.child_photo_path as p
                    where d.child_photo_path is not null
                      and photo_path_in_user_uploads(d.child_photo_path, d.user_id)
                      and not exists (
                          select 1 from order_items other
                           where other.child_photo_path = d.child_photo_path
                             and other.id <> d.id
                             and not (other.generation_status in ('completed', 'failed')
                                      and coalesce(other.generated_at, other.updated_at)
                                          < now() - make_interval(days => p_days)))
                   union
                   select c.image_path
                     from order_item_pages c
                    where c.order_item_id = d.id
                      and c.page_number > 0
                      and c.image_path like 'generated/' || d.id::text || '/%'
                   union
                   select r.image_path
                     from order_item_page_drafts r
                    where r.order_item_id = d.id
                      and r.page_number > 0
                      and r.image_path like 'generated/' || d.id::text || '/%'
               ) candidates
                where p is distinct from d.cover_image_path
                  and p is distinct from d.pdf_path
                order by p
           )
      from due d;
$$;

-- Redefined from 006_retention.sql: the drafts go with the page checkpoints.
create or replace function mark_photo_deleted(p_item uuid)
returns boolean
language plpgsql
as $$
begin
    update order_items
       set child_photo_path = null,
           photo_deleted_at = coalesce(photo_deleted_at, now()),
           updated_at = now()
     where id = p_item
       and generation_status in ('completed', 'failed');
    if not found then
        return false;
    end if;
    delete from order_item_pages where order_item_id = p_item and page_number > 0;
    delete from order_item_page_drafts where order_item_id = p_item and page_number > 0;
    return true;
end;
$$;

-- Redefined from 009_queue_honesty.sql: the item's drafts are dropped (the checkpoints stay). A
-- failed item's draft is most often the drawing that failed its judge for good; a fresh set of
-- attempts should draw that page again, not judge the same drawing again.
create or replace function retry_failed_order_item(p_item uuid)
returns text
language plpgsql
as $$
declare
    v_status text;
    v_payment_status text;
begin
    select oi.generation_status, o.payment_status
      into v_status, v_payment_status
      from order_items oi
      join orders o on o.id = oi.order_id
     where oi.id = p_item
       for update of oi;
    if not found then
        return 'not_found';
    end if;
    if v_status <> 'failed' then
        return 'not_failed';
    end if;
    if v_payment_status is distinct from 'paid' then
        return 'order_not_paid';
    end if;
    delete from order_item_page_drafts where order_item_id = p_item;
    update order_items
       set generation_status = 'pending',
           attempts = 0,
           crash_count = 0,
           error_code = null,
           error_message = null,
           current_step = 'Waiting to start',
           next_attempt_at = now(),
           updated_at = now()
     where id = p_item;
    return 'ok';
end;
$$;

revoke execute on function save_order_item_page_draft(uuid, text, integer, text, integer, text, text, jsonb) from public;
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        execute 'revoke execute on function save_order_item_page_draft(uuid, text, integer, text, integer, text, text, jsonb) from anon, authenticated';
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        execute 'grant execute on function save_order_item_page_draft(uuid, text, integer, text, integer, text, text, jsonb) to service_role';
    end if;
end
$$;

-- Run as owner, executable by book_monitor (migrations/011); a redefinition resets the
-- security attributes, so the redefined ones are named again.
select _secure_daemon_functions(array[
    'save_order_item_page_draft', 'checkpoint_order_item_page', 'load_order_item_context',
    'items_due_for_photo_deletion', 'mark_photo_deleted', 'retry_failed_order_item']);
