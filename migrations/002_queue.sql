-- The queue protocol (ARCHITECTURE section 5). Every database write of the daemon goes through
-- these functions, called as RPC by both store adapters, so the semantics live here once.
--
-- Ownership: a worker may only write an item that is 'processing' and claimed by it. A worker whose
-- lease was taken over gets false / 'lost' back and must abandon the item (fencing).

-- Ends an item as failed and tells the parent, in the same transaction. Internal helper.
create or replace function _fail_order_item_terminal(p_item uuid, p_error_code text, p_error_message text)
returns void
language sql
as $$
    with failed as (
        update order_items
           set generation_status = 'failed',
               error_code = p_error_code,
               error_message = p_error_message,
               current_step = 'Failed',
               claimed_by = null,
               lease_expires_at = null,
               updated_at = now()
         where id = p_item
        returning id, order_id
    )
    insert into notifications (user_id, order_item_id, kind, title, body)
    select o.user_id, f.id, 'book_failed', 'We could not create your book', p_error_message
      from failed f
      join orders o on o.id = f.order_id;
$$;

create or replace function claim_order_items(p_worker text, p_limit integer, p_lease_seconds integer)
returns setof order_items
language plpgsql
as $$
declare
    v_exhausted uuid;
begin
    -- Dead-letter: an item whose attempts are used up (say, it crashes its worker every time) is
    -- failed instead of being reclaimed forever.
    for v_exhausted in
        select oi.id
          from order_items oi
          join orders o on o.id = oi.order_id
         where o.payment_status = 'paid'
           and oi.attempts >= oi.max_attempts
           and ((oi.generation_status = 'pending' and oi.next_attempt_at <= now())
                or (oi.generation_status = 'processing' and oi.lease_expires_at < now()))
           for update of oi skip locked
    loop
        perform _fail_order_item_terminal(
            v_exhausted, 'max_attempts',
            'We tried several times but could not create your book. Our team has been notified.');
    end loop;

    -- The claim itself: one statement. The CTE is materialized so it acts as a fence: the LIMIT
    -- and the attempts guard apply before the update, whatever plan the planner picks.
    return query
    with candidates as materialized (
        select oi.id
          from order_items oi
          join orders o on o.id = oi.order_id
         where o.payment_status = 'paid'
           and oi.attempts < oi.max_attempts
           and ((oi.generation_status = 'pending' and oi.next_attempt_at <= now())
                or (oi.generation_status = 'processing' and oi.lease_expires_at < now()))
         order by oi.next_attempt_at, oi.id
         limit greatest(p_limit, 0)
           for update of oi skip locked
    )
    update order_items oi
       set generation_status = 'processing',
           claimed_by = p_worker,
           lease_expires_at = now() + make_interval(secs => p_lease_seconds),
           attempts = oi.attempts + 1,
           started_at = now(),
           current_step = 'Starting',
           error_code = null,
           error_message = null,
           updated_at = now()
      from candidates c
     where oi.id = c.id
    returning oi.*;
end;
$$;

-- Extends the lease while the caller still owns the item. Returns 'ok', 'lost' (someone else owns
-- it now, or it is no longer processing) or 'order_not_paid' (refunded meanwhile: the item is
-- failed here, and the worker stops).
create or replace function heartbeat_order_item(p_item uuid, p_worker text, p_lease_seconds integer)
returns text
language plpgsql
as $$
declare
    v_payment_status text;
begin
    select o.payment_status
      into v_payment_status
      from order_items oi
      join orders o on o.id = oi.order_id
     where oi.id = p_item
       and oi.claimed_by = p_worker
       and oi.generation_status = 'processing'
       for update of oi;
    if not found then
        return 'lost';
    end if;
    if v_payment_status is distinct from 'paid' then
        perform _fail_order_item_terminal(
            p_item, 'order_not_paid',
            'This order is no longer paid, so we stopped creating the book.');
        return 'order_not_paid';
    end if;
    update order_items
       set lease_expires_at = now() + make_interval(secs => p_lease_seconds),
           updated_at = now()
     where id = p_item;
    return 'ok';
end;
$$;

create or replace function set_order_item_progress(
    p_item uuid,
    p_worker text,
    p_progress integer,
    p_step text,
    p_pages_total integer default null,
    p_usage jsonb default null
)
returns boolean
language sql
as $$
    with updated as (
        update order_items
           set progress = least(greatest(p_progress, 0), 100),
               current_step = left(p_step, 200),
               pages_total = coalesce(p_pages_total, pages_total),
               ai_usage = coalesce(p_usage, ai_usage),
               updated_at = now()
         where id = p_item
           and claimed_by = p_worker
           and generation_status = 'processing'
        returning 1
    )
    select exists (select 1 from updated);
$$;

-- Records one finished illustration (page 0 is the cover). Upsert: a repeated step after a lost
-- lease writes the same deterministic path again, harmlessly.
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
    perform 1
       from order_items
      where id = p_item
        and claimed_by = p_worker
        and generation_status = 'processing'
        for update;
    if not found then
        return false;
    end if;
    insert into order_item_pages (order_item_id, page_number, image_path, prompt_version, model)
    values (p_item, p_page_number, p_image_path, p_prompt_version, p_model)
    on conflict (order_item_id, page_number) do update
        set image_path = excluded.image_path,
            prompt_version = excluded.prompt_version,
            model = excluded.model,
            created_at = now();
    update order_items
       set pages_done = (select count(*) from order_item_pages
                          where order_item_id = p_item and page_number > 0),
           updated_at = now()
     where id = p_item;
    return true;
end;
$$;

create or replace function complete_order_item(
    p_item uuid,
    p_worker text,
    p_pdf_path text,
    p_pdf_url text,
    p_cover_path text,
    p_cover_url text,
    p_usage jsonb default null
)
returns boolean
language plpgsql
as $$
declare
    v_user_id uuid;
    v_title text;
begin
    update order_items oi
       set generation_status = 'completed',
           progress = 100,
           current_step = 'Your book is ready',
           pdf_path = p_pdf_path,
           pdf_url = p_pdf_url,
           cover_image_path = p_cover_path,
           cover_image_url = p_cover_url,
           generated_at = now(),
           ai_usage = coalesce(p_usage, oi.ai_usage),
           error_code = null,
           error_message = null,
           claimed_by = null,
           lease_expires_at = null,
           updated_at = now()
      from orders o
     where oi.id = p_item
       and oi.claimed_by = p_worker
       and oi.generation_status = 'processing'
       and o.id = oi.order_id
    returning o.user_id into v_user_id;
    if not found then
        return false;
    end if;
    select b.title into v_title
      from order_items oi join books b on b.id = oi.book_id
     where oi.id = p_item;
    insert into notifications (user_id, order_item_id, kind, title, body)
    values (v_user_id, p_item, 'book_ready', 'Your book is ready!',
            format('Your personalized copy of "%s" is ready to read.', coalesce(v_title, 'your book')));
    return true;
end;
$$;

-- Retryable failures go back to 'pending' after an exponential backoff with jitter (at least the
-- server-requested p_retry_after_seconds); terminal ones, and retryable ones whose attempts are
-- used up, end 'failed' with a notification. The attempt budget is the row's max_attempts, capped
-- by the daemon's MAX_ATTEMPTS (p_max_attempts). Returns 'retry', 'failed' or 'lost'.
create or replace function fail_order_item(
    p_item uuid,
    p_worker text,
    p_error_code text,
    p_error_message text,
    p_retryable boolean,
    p_retry_after_seconds double precision default null,
    p_backoff_base_seconds double precision default 30,
    p_backoff_max_seconds double precision default 1800,
    p_max_attempts integer default null
)
returns text
language plpgsql
as $$
declare
    v_attempts integer;
    v_max_attempts integer;
    v_delay double precision;
begin
    select attempts, max_attempts
      into v_attempts, v_max_attempts
      from order_items
     where id = p_item
       and claimed_by = p_worker
       and generation_status = 'processing'
       for update;
    if not found then
        return 'lost';
    end if;
    if not p_retryable or v_attempts >= least(v_max_attempts, coalesce(p_max_attempts, v_max_attempts)) then
        perform _fail_order_item_terminal(p_item, p_error_code, p_error_message);
        return 'failed';
    end if;
    v_delay := least(p_backoff_base_seconds * power(2, greatest(v_attempts - 1, 0)), p_backoff_max_seconds)
               * (0.5 + random() * 0.5);
    v_delay := greatest(v_delay, coalesce(p_retry_after_seconds, 0));
    update order_items
       set generation_status = 'pending',
           error_code = p_error_code,
           error_message = p_error_message,
           current_step = 'Waiting to retry',
           next_attempt_at = now() + make_interval(secs => v_delay),
           claimed_by = null,
           lease_expires_at = null,
           updated_at = now()
     where id = p_item;
    return 'retry';
end;
$$;

-- The child analysis is a paid call too: kept on the item so a resumed attempt reuses it.
create or replace function save_child_analysis(p_item uuid, p_worker text, p_analysis jsonb)
returns boolean
language sql
as $$
    with updated as (
        update order_items
           set child_analysis = p_analysis,
               updated_at = now()
         where id = p_item
           and claimed_by = p_worker
           and generation_status = 'processing'
        returning 1
    )
    select exists (select 1 from updated);
$$;

-- Graceful shutdown: hand the item back without counting the attempt. Checkpoints stay, so the
-- next claimant resumes where this one stopped.
create or replace function release_order_item(p_item uuid, p_worker text)
returns boolean
language sql
as $$
    with released as (
        update order_items
           set generation_status = 'pending',
               attempts = greatest(attempts - 1, 0),
               current_step = 'Waiting to resume',
               next_attempt_at = now(),
               claimed_by = null,
               lease_expires_at = null,
               updated_at = now()
         where id = p_item
           and claimed_by = p_worker
           and generation_status = 'processing'
        returning 1
    )
    select exists (select 1 from released);
$$;

-- Everything the processor needs in one round trip; null when the caller does not own the item.
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
                                   from order_item_pages c where c.order_item_id = oi.id), '[]'::jsonb)
    )
      from order_items oi
      join orders o on o.id = oi.order_id
     where oi.id = p_item
       and oi.claimed_by = p_worker
       and oi.generation_status = 'processing';
$$;

-- Operator action: a failed item gets a fresh set of attempts. Returns 'ok', 'not_found',
-- 'not_failed' or 'order_not_paid'.
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
    update order_items
       set generation_status = 'pending',
           attempts = 0,
           error_code = null,
           error_message = null,
           current_step = 'Waiting to start',
           next_attempt_at = now(),
           updated_at = now()
     where id = p_item;
    return 'ok';
end;
$$;

-- Paid items waiting for a worker right now (for the queue-depth gauge). Uses the partial index.
create or replace function order_queue_depth()
returns bigint
language sql
stable
as $$
    select count(*)
      from order_items oi
      join orders o on o.id = oi.order_id
     where o.payment_status = 'paid'
       and oi.generation_status = 'pending'
       and oi.next_attempt_at <= now();
$$;

create or replace function get_book_analysis(p_book uuid, p_prompt_version text, p_model text)
returns jsonb
language sql
stable
as $$
    select analysis from book_analyses
     where book_id = p_book and prompt_version = p_prompt_version and model = p_model;
$$;

create or replace function put_book_analysis(p_book uuid, p_prompt_version text, p_model text, p_analysis jsonb)
returns boolean
language sql
as $$
    insert into book_analyses (book_id, prompt_version, model, analysis)
    values (p_book, p_prompt_version, p_model, p_analysis)
    on conflict (book_id, prompt_version, model) do nothing;
    select true;
$$;

-- Wake-ups for the postgres adapter's LISTEN: fired when an item becomes claimable. Polling stays
-- the source of truth; a lost notification only delays pickup to the next poll.
create or replace function _notify_order_item_ready()
returns trigger
language plpgsql
as $$
begin
    if new.generation_status = 'pending'
       and new.next_attempt_at <= now()
       and (tg_op = 'INSERT' or old.generation_status is distinct from 'pending') then
        perform pg_notify('order_items_ready', new.id::text);
    end if;
    return null;
end;
$$;

create or replace trigger order_items_ready_notify
    after insert or update of generation_status on order_items
    for each row execute function _notify_order_item_ready();

create or replace function _notify_order_paid()
returns trigger
language plpgsql
as $$
begin
    if new.payment_status = 'paid' and old.payment_status is distinct from 'paid' then
        perform pg_notify('order_items_ready', oi.id::text)
           from order_items oi
          where oi.order_id = new.id
            and oi.generation_status = 'pending';
    end if;
    return null;
end;
$$;

create or replace trigger orders_paid_notify
    after update of payment_status on orders
    for each row execute function _notify_order_paid();
