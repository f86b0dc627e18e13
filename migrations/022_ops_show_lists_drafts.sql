-- `book-monitor show` lists an item's drafts (migration 021): the drawings stored and waiting
-- for, or failed at, their quality judge. Without them an operator looking at an item stuck in
-- processing saw its checkpoints only, not the pages it had drawn and paid for.

-- One item in full: the row, its order and book, its page checkpoints and drafts. Null when no
-- such item.
-- Redefined from 017_ops_show_hides_print_files.sql: adds 'drafts' (page, model, redraws before
-- it, when; the object's path only with p_pii, like a checkpoint's); nothing else changes.
create or replace function ops_show_order_item(p_item uuid, p_pii boolean default false)
returns jsonb
language sql
stable
as $$
    select jsonb_build_object(
        'item', case when p_pii then to_jsonb(oi)
                     else (to_jsonb(oi) - array['child_name', 'child_age', 'child_gender',
                                                'child_photo_path', 'child_analysis', 'pdf_url',
                                                'pdf_path', 'cover_image_url', 'cover_image_path',
                                                'print_interior_url', 'print_interior_path',
                                                'print_cover_url', 'print_cover_path'])
                          || jsonb_build_object(
                                 'current_step', _ops_mask_child_name(oi.current_step, oi.child_name))
                end,
        'order', jsonb_build_object('id', o.id, 'payment_status', o.payment_status)
                 || case when p_pii then jsonb_build_object('user_id', o.user_id)
                         else '{}'::jsonb end,
        'book', jsonb_build_object('id', oi.book_id, 'title', b.title),
        'pages', (
            select coalesce(jsonb_agg(
                       jsonb_build_object('page_number', p.page_number, 'model', p.model,
                                          'prompt_version', p.prompt_version,
                                          'created_at', p.created_at)
                       || case when p_pii then jsonb_build_object('image_path', p.image_path)
                               else '{}'::jsonb end
                       order by p.page_number), '[]'::jsonb)
              from order_item_pages p
             where p.order_item_id = oi.id),
        'drafts', (
            select coalesce(jsonb_agg(
                       jsonb_build_object('page_number', d.page_number, 'model', d.model,
                                          'redraws', d.redraws, 'created_at', d.created_at)
                       || case when p_pii then jsonb_build_object('image_path', d.image_path)
                               else '{}'::jsonb end
                       order by d.page_number), '[]'::jsonb)
              from order_item_page_drafts d
             where d.order_item_id = oi.id)
    )
      from order_items oi
      join orders o on o.id = oi.order_id
      left join books b on b.id = oi.book_id
     where oi.id = p_item;
$$;

-- Run as owner, executable by book_monitor (migrations/011).
select _secure_daemon_functions(array['ops_show_order_item']);
