-- The catalog entry of one book, for a personalized cover made without an order
-- (`book-monitor generate-cover` and `POST /generate-cover`, processors/cover_service.py).
-- Only the columns the cover needs: what the prompts describe (title, genre, ages) and where
-- the cover is and where its hero stands. Null when no book has this id.
create or replace function get_catalog_book(p_book uuid)
returns jsonb
language sql
stable
as $$
    select jsonb_build_object(
        'id', b.id, 'title', b.title, 'genre', b.genre, 'age_min', b.age_min,
        'age_max', b.age_max, 'cover_image_path', b.cover_image_path,
        'cover_character_box', b.cover_character_box)
      from books b
     where b.id = p_book;
$$;

-- Run as owner, executable by book_monitor (migrations/011).
select _secure_daemon_functions(array['get_catalog_book']);
