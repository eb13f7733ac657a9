import tempfile
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast, T5Config, T5EncoderModel

from flowcore import ClipEncoder, GenericEncoder
from flowcore.encoders.base import ItemRequest
from flowcore.encoders.layout import ROWS_PER_CHUNK
from flowcore.testing import tiny_clip_text_model


def text_core(model):
    """The module holding embeddings, layers and final norm (transformers 4.x nests it in `.text_model`)."""
    return getattr(model, "text_model", model)


PROMPT = "a crosswalk next to a bus station with a standing zebra"


def test_clip_encoder_matches_the_model_forward(clip_encoder, clip_model, tokenizer):
    layout = clip_encoder.layout(PROMPT)
    encoding = clip_encoder.encode(layout)
    ids = torch.tensor([tokenizer(PROMPT, padding="max_length", max_length=77)["input_ids"]])
    reference = clip_model(ids)
    torch.testing.assert_close(encoding.rows, reference.last_hidden_state[0])
    torch.testing.assert_close(encoding.pooled, reference.pooler_output[0])


def test_clip_skip_takes_an_earlier_layer_then_the_final_norm(tokenizer):
    model = tiny_clip_text_model(num_layers=3, seed=3)
    encoder = ClipEncoder(tokenizer, model, clip_skip=2)
    ids = torch.tensor([tokenizer(PROMPT, padding="max_length", max_length=77)["input_ids"]])
    hidden = model(ids, output_hidden_states=True).hidden_states[-2]
    expected = text_core(model).final_layer_norm(hidden)[0]
    torch.testing.assert_close(encoder.encode(encoder.layout(PROMPT)).rows, expected)
    with pytest.raises(ValueError, match="clip_skip"):
        ClipEncoder(tokenizer, model, clip_skip=0)


def test_sdxl_concatenates_penultimate_layers_and_pools_from_the_second(sdxl_encoder, tokenizer):
    first, second = (tower.model for tower in sdxl_encoder.towers)
    ids = torch.tensor([tokenizer(PROMPT, padding="max_length", max_length=77)["input_ids"]])
    out_1 = first(ids, output_hidden_states=True)
    out_2 = second(ids, output_hidden_states=True)
    encoding = sdxl_encoder.encode(sdxl_encoder.layout(PROMPT))
    assert encoding.rows.shape == (77, 32 + 48)
    torch.testing.assert_close(encoding.rows[:, :32], out_1.hidden_states[-2][0])
    torch.testing.assert_close(encoding.rows[:, 32:], out_2.hidden_states[-2][0])
    torch.testing.assert_close(encoding.pooled, out_2.text_embeds[0])


def request(tokenizer, text: str, start: int = 1) -> ItemRequest:
    return ItemRequest(text, tuple(tokenizer(text, add_special_tokens=False)["input_ids"]), start)


def test_packed_isolated_items_equal_encoding_each_alone(clip_encoder, clip_model, tokenizer):
    texts = ["standing zebra", "bus station", "crosswalk", "San Francisco's Golden Gate Bridge"]
    items = clip_encoder.encode_isolated([request(tokenizer, text) for text in texts])
    for text, item in zip(texts, items):
        ids = tokenizer(text)["input_ids"]  # BOS ... EOS
        alone = clip_model(torch.tensor([ids])).last_hidden_state[0, 1:-1]
        assert item.token_ids == ids[1:-1]
        torch.testing.assert_close(item.rows, alone, atol=1e-5, rtol=1e-4)
        assert item.layers[0].shape == (3, len(ids) - 2, 32)


def test_position_matched_isolated_items_sit_at_their_prompt_positions(clip_encoder, clip_model, tokenizer):
    (item,) = clip_encoder.encode_isolated([request(tokenizer, "zebra", start=10)])
    hidden = text_core(clip_model).embeddings(
        input_ids=torch.tensor([[49406, item.token_ids[0]]]), position_ids=torch.tensor([[0, 10]])
    )
    torch.testing.assert_close(item.layers[0][0, 0], hidden[0, 1])


def test_long_prompts_encode_each_chunk_separately(clip_encoder):
    text = "photo " * 80 + "zebra"
    layout = clip_encoder.layout(text)
    rows = clip_encoder.encode(layout).rows
    assert rows.shape == (2 * ROWS_PER_CHUNK, 32)
    second_alone = clip_encoder.encode(clip_encoder.layout("photo " * 5 + "zebra")).rows
    torch.testing.assert_close(rows[77:], second_alone)


def _bert():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "zebra", "cross", "##walk", "bus", "station", "standing", "with"]
    try:
        tokenizer = BertTokenizerFast(vocab={token: index for index, token in enumerate(vocab)})
    except TypeError:  # transformers 4.x reads a vocabulary file
        path = Path(tempfile.mkdtemp()) / "vocab.txt"
        path.write_text("\n".join(vocab))
        tokenizer = BertTokenizerFast(vocab_file=str(path))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    return tokenizer, BertModel(config).eval()


def test_generic_bidirectional_encoder_lays_out_chunks_with_cls_and_sep():
    tokenizer, model = _bert()
    encoder = GenericEncoder(tokenizer, model, causal=False)
    layout = encoder.layout("a crosswalk with a zebra")
    encoding = encoder.encode(layout)
    assert encoding.rows.shape == (77, 32)
    assert encoder.supports_positions
    ids = [2, *[t.id for t in layout.chunks[0]], 3]
    reference = model(torch.tensor([ids])).last_hidden_state[0]
    torch.testing.assert_close(encoding.rows[: len(ids)], reference, atol=1e-5, rtol=1e-4)
    (item,) = encoder.encode_isolated([request(tokenizer, "standing zebra")])
    alone = model(torch.tensor([[2, 10, 5, 3]])).last_hidden_state[0, 1:3]
    torch.testing.assert_close(item.rows, alone, atol=1e-5, rtol=1e-4)
    with pytest.raises(NotImplementedError):
        encoder.rederive(layout, [])


def test_generic_encoder_without_a_start_token_puts_tokens_from_row_zero(tokenizer):
    class NoBos:
        """The CLIP tokenizer seen as a T5-style one: no start token."""

        bos_token_id = None
        cls_token_id = None
        eos_token_id = 49407
        sep_token_id = None
        pad_token_id = 49407
        is_fast = True

        def __call__(self, *args, **kwargs):
            return tokenizer(*args, **kwargs)

    torch.manual_seed(0)
    config = T5Config(vocab_size=49408, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    encoder = GenericEncoder(NoBos(), T5EncoderModel(config).eval(), causal=False)
    layout = encoder.layout("a standing zebra")
    assert layout.leading == 0 and layout.rows_for_span(2, 10) == [1]
    assert not encoder.supports_positions
    assert encoder.encode(layout).rows.shape == (77, 32)
