-- The catalog, the orders written by the app, and the daemon's bookkeeping.
--
-- Idempotent: it runs on an empty database and on one where the app already created
-- orders(id, user_id, payment_status) and order_items(id, order_id, book_id, generation_status,
-- pdf_url) with rows in them. Missing columns are added, existing rows are kept, and constraints
-- that old rows might break are added NOT VALID (enforced for new writes, not checked for old rows).

create table if not exists books (
    id uuid primary key default gen_random_uuid(),
    title text not null,
    genre text,
    age_min integer,
    age_max integer,
    cover_image_path text,
    trim_width_in numeric(5, 2) not null default 8.5,
    trim_height_in numeric(5, 2) not null default 8.5,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create table if not exists book_pages (
    id uuid primary key default gen_random_uuid(),
    book_id uuid not null references books (id) on delete cascade,
    page_number integer not null check (page_number > 0),
    image_path text not null,
    has_character boolean not null default true,
    -- Where the hero stands, as fractions of the page: {"x": .., "y": .., "w": .., "h": ..}.
    character_box jsonb,
    text text,
    created_at timestamptz not null default now(),
    unique (book_id, page_number)
);

create table if not exists orders (
    id uuid primary key default gen_random_uuid(),
    user_id uuid,
    payment_status text not null default 'pending'
);
alter table orders add column if not exists user_id uuid;
alter table orders add column if not exists payment_status text default 'pending';
alter table orders add column if not exists created_at timestamptz not null default now();
alter table orders add column if not exists updated_at timestamptz not null default now();

create table if not exists order_items (
    id uuid primary key default gen_random_uuid(),
    order_id uuid not null references orders (id) on delete cascade,
    book_id uuid,
    generation_status text not null default 'pending',
    pdf_url text
);
alter table order_items add column if not exists book_id uuid;
alter table order_items add column if not exists generation_status text default 'pending';
alter table order_items add column if not exists pdf_url text;
alter table order_items add column if not exists pdf_path text;
alter table order_items add column if not exists cover_image_url text;
alter table order_items add column if not exists cover_image_path text;
alter table order_items add column if not exists generated_at timestamptz;
alter table order_items add column if not exists progress integer not null default 0;
alter table order_items add column if not exists current_step text;
alter table order_items add column if not exists pages_total integer;
alter table order_items add column if not exists pages_done integer not null default 0;
alter table order_items add column if not exists error_code text;
alter table order_items add column if not exists error_message text;
alter table order_items add column if not exists attempts integer not null default 0;
alter table order_items add column if not exists max_attempts integer not null default 3;
alter table order_items add column if not exists next_attempt_at timestamptz not null default now();
alter table order_items add column if not exists claimed_by text;
alter table order_items add column if not exists lease_expires_at timestamptz;
alter table order_items add column if not exists started_at timestamptz;
alter table order_items add column if not exists child_name text;
alter table order_items add column if not exists child_age integer;
alter table order_items add column if not exists child_gender text;
alter table order_items add column if not exists child_photo_path text;
alter table order_items add column if not exists child_analysis jsonb;
alter table order_items add column if not exists ai_usage jsonb not null default '{}'::jsonb;
alter table order_items add column if not exists created_at timestamptz not null default now();
alter table order_items add column if not exists updated_at timestamptz not null default now();

-- Old rows may carry a null status; the queue only understands the contract's four values.
update order_items set generation_status = 'pending' where generation_status is null;
alter table order_items alter column generation_status set default 'pending';
alter table order_items alter column generation_status set not null;

do $$
begin
    if not exists (select 1 from pg_constraint where conname = 'order_items_generation_status_check') then
        alter table order_items add constraint order_items_generation_status_check
            check (generation_status in ('pending', 'processing', 'completed', 'failed')) not valid;
    end if;
    if not exists (select 1 from pg_constraint where conname = 'order_items_progress_check') then
        alter table order_items add constraint order_items_progress_check
            check (progress between 0 and 100) not valid;
    end if;
    if not exists (select 1 from pg_constraint where conname = 'order_items_book_id_fkey') then
        alter table order_items add constraint order_items_book_id_fkey
            foreign key (book_id) references books (id) not valid;
    end if;
end
$$;

-- One row per finished illustration of an item (page_number 0 is the cover): the checkpoint that
-- lets a re-claimed item skip every image call that already succeeded.
create table if not exists order_item_pages (
    order_item_id uuid not null references order_items (id) on delete cascade,
    page_number integer not null check (page_number >= 0),
    image_path text not null,
    prompt_version text,
    model text,
    created_at timestamptz not null default now(),
    primary key (order_item_id, page_number)
);

-- Cover analyses are per book, not per order: a hundred orders of one book analyze it once.
create table if not exists book_analyses (
    book_id uuid not null references books (id) on delete cascade,
    prompt_version text not null,
    model text not null,
    analysis jsonb not null,
    created_at timestamptz not null default now(),
    primary key (book_id, prompt_version, model)
);

create table if not exists notifications (
    id uuid primary key default gen_random_uuid(),
    user_id uuid,
    order_item_id uuid references order_items (id) on delete set null,
    kind text not null,
    title text not null,
    body text not null,
    read_at timestamptz,
    created_at timestamptz not null default now()
);

-- The claim query only ever looks at unfinished items; the partial index keeps it cheap however
-- many completed rows pile up.
create index if not exists order_items_claimable_idx
    on order_items (next_attempt_at)
    where generation_status in ('pending', 'processing');
create index if not exists order_items_order_id_idx on order_items (order_id);
create index if not exists notifications_user_id_idx on notifications (user_id, created_at desc);
