from flowcore.encoders.layout import ROWS_PER_CHUNK, Token, chunk_tokens, layout_prompt, tokenize_with_offsets


def test_tokens_carry_their_character_spans(tokenizer):
    text = "A crosswalk, zebra's Ünïcode 😀"
    tokens = tokenize_with_offsets(tokenizer, text)
    assert [t.id for t in tokens] == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert [text[t.start : t.end] for t in tokens][:4] == ["A", "cross", "walk", ","]


def test_slow_tokenizer_fallback_gives_the_same_ids(tokenizer):
    class Slow:
        is_fast = False

        def __call__(self, text, add_special_tokens=False):
            return tokenizer(text, add_special_tokens=add_special_tokens)

    text = "a crosswalk next to a bus-station, with a standing zebra"
    fast = tokenize_with_offsets(tokenizer, text)
    slow = tokenize_with_offsets(Slow(), text)
    assert [t.id for t in slow] == [t.id for t in fast]


def test_short_prompt_is_one_chunk_with_rows_after_bos(tokenizer):
    layout = layout_prompt(tokenizer, "a standing zebra")
    assert len(layout.chunks) == 1 and layout.n_rows == ROWS_PER_CHUNK
    assert layout.rows_for_span(2, 16) == [2, 3]
    assert layout.tail_rows(0) == list(range(4, 77))


def test_long_prompt_spills_into_a_second_chunk(tokenizer):
    text = "photo " * 80 + "zebra"
    layout = layout_prompt(tokenizer, text)
    assert [len(c) for c in layout.chunks] == [75, 6]
    start = text.index("zebra")
    assert layout.rows_for_span(start, start + 5) == [77 + 1 + 5]


def test_break_starts_a_new_chunk(tokenizer):
    layout = layout_prompt(tokenizer, "a zebra BREAK a crosswalk")
    assert [[t.id for t in c] for c in layout.chunks] == [
        tokenizer("a zebra", add_special_tokens=False)["input_ids"],
        tokenizer("a crosswalk", add_special_tokens=False)["input_ids"],
    ]
    assert len(layout_prompt(tokenizer, "a zebra BREAK").chunks) == 1
    assert len(layout_prompt(tokenizer, "a BREAK BREAK b").chunks) == 3


def test_comma_backtrack_moves_the_words_after_the_last_comma():
    comma = 267
    tokens = [Token(1, i, i + 1) for i in range(70)] + [Token(comma, 70, 71)] + [Token(2, i, i + 1) for i in range(9)]
    chunks = chunk_tokens([tokens], comma_id=comma)
    assert [len(c) for c in chunks] == [71, 9]
    assert chunks[0][-1].id == comma


def test_no_backtrack_when_the_comma_is_too_far():
    comma = 267
    tokens = [Token(comma, 0, 1)] + [Token(1, i, i + 1) for i in range(79)]
    assert [len(c) for c in chunk_tokens([tokens], comma_id=comma)] == [75, 5]


def test_the_test_tokenizer_has_openai_ids(tokenizer):
    # Ids of OpenAI's CLIP vocabulary (as in every SD checkpoint's tokenizer).
    assert tokenizer("a photo, of a cat")["input_ids"] == [49406, 320, 1125, 267, 539, 320, 2368, 49407]
    assert len(tokenizer) == 49408
