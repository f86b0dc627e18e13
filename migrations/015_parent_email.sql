-- Email to the parent (issue 14, item 7): a durable outbox fed by the in-app notifications.
--
-- The final states already write their notification in the same transaction as the row
-- (complete_order_item: 'book_ready'; _fail_order_item_terminal, reached by every final failure:
-- 'book_failed'; a pending retry writes none). A trigger on that insert queues one email per
-- such notification, so "the book is final" and "its email is owed" commit together: a crash at
-- any moment loses no mail, and no function of the queue is redefined.
--
-- The outbox is a table of its own, not columns on notifications: notifications is in Realtime's
-- publication (012) and readable by the app (005), so every claim and retry of the sender would
-- otherwise stream an UPDATE of the parent's notification to the app and show it the sender's
-- bookkeeping. Only notifications written from now on are queued: history is never mailed.
--
-- The sender (monitor/mailer.py) claims due rows with FOR UPDATE SKIP LOCKED under a lease, so
-- replicas never send the same mail twice while the lease holds; SMTP itself is at-least-once
-- (a crash after the server accepted a message and before it was marked sent repeats it once,
-- with the same Message-ID).

-- ---------------------------------------------------------------- where the address comes from
-- orders.contact_email: written at checkout by whoever creates the order (the shop's backend,
-- with the service role: the app has no insert or update privilege on orders, migration 005).
-- When it is empty, the Supabase account's address (auth.users.email) is used.
alter table orders add column if not exists contact_email text;

do $$
begin
    if not exists (select 1 from pg_constraint where conname = 'orders_contact_email_check') then
        -- One address, no spaces or line breaks (which could smuggle mail headers).
        alter table orders add constraint orders_contact_email_check
            check (contact_email is null or contact_email ~ '^[^@\s,;<>]+@[^@\s,;<>]+$') not valid;
    end if;
end
$$;

-- The address an order's emails go to, or null. auth.users exists on Supabase only, so it is
-- looked up dynamically; on a plain Postgres only contact_email counts.
create or replace function _order_email_address(p_order uuid)
returns text
language plpgsql
stable
as $$
declare
    v_address text;
    v_user uuid;
begin
    select nullif(btrim(o.contact_email), ''), o.user_id
      into v_address, v_user
      from orders o
     where o.id = p_order;
    if v_address is null and v_user is not null and to_regclass('auth.users') is not null then
        execute 'select nullif(btrim(email), '''') from auth.users where id = $1'
           into v_address
          using v_user;
    end if;
    return v_address;
end;
$$;

-- ---------------------------------------------------------------- the outbox
-- status: 'pending' (owed; next_attempt_at says when), 'sent', 'gave_up' (attempts used up or
-- refused for good) or 'skipped' (no address, or too old to be news). last_error holds a machine
-- code ('connect_failed', 'smtp_554', 'no_address', ...), never an address or server text.
create table if not exists notification_emails (
    notification_id uuid primary key references notifications (id) on delete cascade,
    order_item_id uuid references order_items (id) on delete cascade,
    kind text not null check (kind in ('book_ready', 'book_failed')),
    status text not null default 'pending'
        check (status in ('pending', 'sent', 'gave_up', 'skipped')),
    attempts integer not null default 0,
    next_attempt_at timestamptz,
    claimed_by text,
    sent_at timestamptz,
    last_error text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index if not exists notification_emails_due_idx
    on notification_emails (next_attempt_at) where status = 'pending';

-- The daemon's alone: RLS on, no policy, no grant to the app's roles (as book_analyses, 005).
alter table notification_emails enable row level security;
revoke all on notification_emails from public, anon, authenticated;
grant select, insert, update, delete on notification_emails to service_role;

create or replace function _queue_notification_email()
returns trigger
language plpgsql
security definer
set search_path = public, pg_temp
as $$
begin
    insert into notification_emails (notification_id, order_item_id, kind, next_attempt_at)
    values (new.id, new.order_item_id, new.kind, now())
    on conflict (notification_id) do nothing;
    return null;
end;
$$;

drop trigger if exists notifications_queue_email on notifications;
create trigger notifications_queue_email
    after insert on notifications
    for each row when (new.kind in ('book_ready', 'book_failed'))
    execute function _queue_notification_email();

-- ---------------------------------------------------------------- the sender's functions
-- Claims up to p_limit due emails for p_worker for p_lease_seconds (one attempt each) and returns
-- what the templates need. First closes what will never be sent: rows older than
-- p_max_age_seconds ('expired': SMTP was not configured then, or the sender was away for days;
-- a week-old "your book is ready" is no news), rows whose attempts are used up by crashed
-- senders ('crashed'), and rows without an address ('no_address'); those come back with
-- to_address null and attempt 0 so the caller can count them, and are not sent.
create or replace function claim_notification_emails(
    p_worker text,
    p_limit integer,
    p_lease_seconds integer,
    p_max_attempts integer,
    p_max_age_seconds integer
)
returns table (
    notification_id uuid,
    kind text,
    order_item_id uuid,
    attempt integer,
    to_address text,
    book_title text,
    child_name text,
    pdf_url text,
    urls_expire_at timestamptz,
    error_code text,
    error_message text,
    skipped text
)
language plpgsql
as $$
#variable_conflict use_column
begin
    return query
    with closed as (
        update notification_emails ne
           set status = case when ne.created_at < now() - make_interval(secs => p_max_age_seconds)
                             then 'skipped' else 'gave_up' end,
               last_error = case when ne.created_at < now() - make_interval(secs => p_max_age_seconds)
                                 then 'expired' else 'crashed' end,
               next_attempt_at = null,
               claimed_by = null,
               updated_at = now()
         where ne.notification_id in (
                   select x.notification_id from notification_emails x
                    where x.status = 'pending'
                      and x.next_attempt_at <= now()
                      and (x.created_at < now() - make_interval(secs => p_max_age_seconds)
                           or x.attempts >= p_max_attempts)
                    for update skip locked)
        returning ne.notification_id, ne.kind, ne.order_item_id, ne.last_error
    )
    select c.notification_id, c.kind, c.order_item_id, 0, null::text, null::text, null::text,
           null::text, null::timestamptz, null::text, null::text, c.last_error
      from closed c;

    return query
    with due as (
        select ne.notification_id, _order_email_address(oi.order_id) as address
          from notification_emails ne
          left join order_items oi on oi.id = ne.order_item_id
         where ne.status = 'pending'
           and ne.next_attempt_at <= now()
           and ne.created_at >= now() - make_interval(secs => p_max_age_seconds)
           and ne.attempts < p_max_attempts
         order by ne.next_attempt_at
         limit p_limit
           for update of ne skip locked
    ),
    claimed as (
        update notification_emails ne
           set attempts = case when d.address is null then ne.attempts else ne.attempts + 1 end,
               status = case when d.address is null then 'skipped' else 'pending' end,
               last_error = case when d.address is null then 'no_address' else ne.last_error end,
               claimed_by = case when d.address is null then null else p_worker end,
               next_attempt_at = case when d.address is null then null
                                      else now() + make_interval(secs => p_lease_seconds) end,
               updated_at = now()
          from due d
         where ne.notification_id = d.notification_id
        returning ne.notification_id, ne.kind, ne.order_item_id, ne.attempts, d.address
    )
    select c.notification_id, c.kind, c.order_item_id,
           case when c.address is null then 0 else c.attempts end,
           c.address, b.title, oi.child_name, oi.pdf_url, oi.urls_expire_at,
           oi.error_code, coalesce(oi.error_message, n.body),
           case when c.address is null then 'no_address' end
      from claimed c
      join notifications n on n.id = c.notification_id
      left join order_items oi on oi.id = c.order_item_id
      left join books b on b.id = oi.book_id;
end;
$$;

-- The server accepted the message. False when p_worker no longer holds the claim.
create or replace function mark_notification_email_sent(p_notification uuid, p_worker text)
returns boolean
language sql
as $$
    with sent as (
        update notification_emails
           set status = 'sent',
               sent_at = now(),
               next_attempt_at = null,
               claimed_by = null,
               last_error = null,
               updated_at = now()
         where notification_id = p_notification
           and claimed_by = p_worker
           and status = 'pending'
        returning 1
    )
    select exists (select 1 from sent);
$$;

-- An attempt failed with p_error (a machine code). p_retry false, or the attempts used up: the
-- email is given up ('gave_up'). Otherwise it is due again after an exponential backoff with
-- jitter (p_backoff_base_seconds doubling per attempt, at most p_backoff_max_seconds).
-- Returns 'retry', 'gave_up' or 'lost' (p_worker no longer holds the claim).
create or replace function mark_notification_email_failed(
    p_notification uuid,
    p_worker text,
    p_error text,
    p_retry boolean,
    p_max_attempts integer,
    p_backoff_base_seconds double precision,
    p_backoff_max_seconds double precision
)
returns text
language plpgsql
as $$
#variable_conflict use_column
declare
    v_attempts integer;
    v_delay double precision;
begin
    select attempts into v_attempts
      from notification_emails
     where notification_id = p_notification
       and claimed_by = p_worker
       and status = 'pending'
       for update;
    if not found then
        return 'lost';
    end if;
    if not p_retry or v_attempts >= p_max_attempts then
        update notification_emails
           set status = 'gave_up', last_error = p_error, next_attempt_at = null,
               claimed_by = null, updated_at = now()
         where notification_id = p_notification;
        return 'gave_up';
    end if;
    v_delay := least(p_backoff_base_seconds * power(2, greatest(v_attempts - 1, 0)),
                     p_backoff_max_seconds) * (0.5 + random() * 0.5);
    update notification_emails
       set last_error = p_error,
           next_attempt_at = now() + make_interval(secs => v_delay),
           claimed_by = null,
           updated_at = now()
     where notification_id = p_notification;
    return 'retry';
end;
$$;

-- Run as owner, executable by book_monitor (migrations/011).
select _secure_daemon_functions(array[
    'claim_notification_emails', 'mark_notification_email_sent',
    'mark_notification_email_failed']);
