-- `book-monitor show` without --pii must not show links to a child's book: migration 014 added
-- the print files' columns after 013 listed what to leave out.

-- One item in full: the row, its order and book, its page checkpoints. Null when no such item.
-- Redefined from 013_operator_queries.sql: without p_pii it also leaves out the print files'
-- URLs and paths that migration 014 added (a signed link to a child's book is personal data, like
-- pdf_url); nothing else changes.
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
             where p.order_item_id = oi.id)
    )
      from order_items oi
      join orders o on o.id = oi.order_id
      left join books b on b.id = oi.book_id
     where oi.id = p_item;
$$;

-- Run as owner, executable by book_monitor (migrations/011).
select _secure_daemon_functions(array['ops_show_order_item']);
