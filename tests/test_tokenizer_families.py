"""Items map one to one onto their tokens alone in every tokenizer family, and sit at their own positions.

Each family is a tiny tokenizer with its real quirks (`tests/tokenizer_families.py`) on a tiny random-weight
model built from a config; SmolLM2's real byte-level tokenizer is checked too. References are built by hand:
the model's own forward pass on `[start token] ids [end token]` with the position ids written out.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from packaging.version import Version
from tokenizer_families import byte_level_bpe, sentencepiece, wordpiece
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5EncoderModel,
)

from flowcore import FlowOptions, FlowPatcher, GenericEncoder
from flowcore.encoders.base import ItemRequest
from flowcore.testing import smollm2_tokenizer

PROMPT = "a baseball game with ~bats~ and a red car"
# SmolLM2's tokenizer is read from its GGUF file (or from the tokenizer.json saved from it, which tokenizers < 0.14
# cannot read): out of reach under transformers < 4.41, which has no GGUF reader (the AUTOMATIC1111 WebUI's 4.30).
needs_gguf = pytest.mark.skipif(
    Version(transformers.__version__).release < (4, 41), reason="transformers < 4.41 cannot read SmolLM2's tokenizer"
)


def _gpt2(vocab: int):
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=128))


def _llama(vocab: int):
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(config)


def _t5(vocab: int):
    return T5EncoderModel(T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4))


def _bert(vocab: int):
    config = BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    return BertModel(config)


def build(family: str) -> GenericEncoder:
    torch.manual_seed(0)
    if family == "byte-level BPE (GPT-2)":
        tokenizer = byte_level_bpe()
        return GenericEncoder.for_causal_lm(tokenizer, _gpt2(len(tokenizer)).eval(), chunk_length=64)
    if family == "byte-level BPE (SmolLM2's real tokenizer)":
        tokenizer = smollm2_tokenizer()
        return GenericEncoder.for_causal_lm(tokenizer, _llama(len(tokenizer)).eval())
    if family == "SentencePiece (Llama 2)":
        tokenizer = sentencepiece(start_token=True)
        return GenericEncoder.for_causal_lm(tokenizer, _llama(len(tokenizer)).eval())
    if family == "SentencePiece (T5)":
        tokenizer = sentencepiece(start_token=False)
        return GenericEncoder(tokenizer, _t5(len(tokenizer)).eval(), causal=False, chunk_length=128)
    if family == "WordPiece (BERT)":
        tokenizer = wordpiece()
        return GenericEncoder(tokenizer, _bert(len(tokenizer)).eval(), causal=False)
    raise ValueError(family)


FAMILIES = [
    "byte-level BPE (GPT-2)",
    pytest.param("byte-level BPE (SmolLM2's real tokenizer)", marks=needs_gguf),
    "SentencePiece (Llama 2)",
    "SentencePiece (T5)",
    "WordPiece (BERT)",
]


@pytest.fixture(scope="module", params=FAMILIES)
def encoder(request):
    return build(request.param)


def reference_rows(encoder: GenericEncoder, ids: list[int], start: int) -> torch.Tensor:
    """The model's own forward pass on `[start token] ids [end token]`, tokens from position `start`."""
    head = [encoder.start_id] if encoder.start_id is not None else []
    tail = [encoder.end_id] if encoder.end_id is not None else []
    sequence = [*head, *ids, *tail]
    positions = [*range(len(head)), *range(start, start + len(ids) + len(tail))]
    # Masked padding after the sequence, up to its last position: transformers < 4.45 (A1111's 4.30) cuts Llama's
    # rotary tables to the sequence's length. The mask is always given: without one, transformers >= 5.25 reads
    # position ids that restart mid-sequence as packed sequences, and the reference would no longer be plain.
    padding = max(0, positions[-1] + 1 - len(sequence)) if encoder.supports_positions else 0
    mask = [1] * len(sequence) + [0] * padding
    inputs = {
        "input_ids": torch.tensor([sequence + [encoder.pad_id] * padding]),
        "attention_mask": torch.tensor([mask]),
    }
    if encoder.supports_positions:
        inputs["position_ids"] = torch.tensor([positions + [0] * padding])  # masked: any position below the length
    with torch.no_grad():
        states = encoder.encoder_module(**inputs, output_hidden_states=True).hidden_states[encoder.layer]
    return states[0, len(head) : len(head) + len(ids)]


def test_every_item_is_encoded_alone_with_the_token_ids_it_has_in_the_prompt(encoder, nlp):
    result = FlowPatcher(encoder, FlowOptions(sensitivity=0.0), nlp=nlp).run(PROMPT)  # every item, marked patched
    layout = result.layout
    assert [entry.item.text for entry in result.report.items] == ["baseball game", "bats", "red car"]
    for entry in result.report.items:
        ids = [token.id for row, token in layout.token_rows() if row in entry.rows]
        assert ids and "differ" not in entry.reason
        if entry.item.text == "bats":
            assert entry.patched and entry.reason == "marked ~isolate~"
            expected = reference_rows(encoder, ids, start=layout.leading)
            torch.testing.assert_close(result.patched[entry.rows], expected, atol=1e-5, rtol=1e-4)
    untouched = [r for r in range(layout.n_rows) if r not in result.report.items[1].rows]
    assert torch.equal(result.patched[untouched], result.original[untouched])


def test_items_alone_sit_at_the_positions_they_have_in_the_prompt(encoder):
    layout = encoder.layout("a baseball game with bats")
    (*_, (row, token)) = layout.token_rows()
    start = layout.position(row)
    assert start > layout.leading  # after "a baseball game with"
    (alone,) = encoder.encode_isolated([ItemRequest("bats", (token.id,), start)])
    torch.testing.assert_close(alone.rows, reference_rows(encoder, [token.id], start), atol=1e-5, rtol=1e-4)
    if encoder.supports_positions:  # one position early would be a different vector
        assert not torch.allclose(alone.rows, reference_rows(encoder, [token.id], start - 1), atol=1e-4)


@needs_gguf
def test_the_leading_space_of_a_byte_level_token_is_kept():
    tokenizer = smollm2_tokenizer()
    encoder = GenericEncoder.for_causal_lm(tokenizer, _llama(len(tokenizer)).eval())
    layout = encoder.layout("a baseball game with bats")
    bats = layout.item_rows(21, 25)
    (token,) = [t for r, t in layout.token_rows() if r in bats]
    assert tokenizer.convert_ids_to_tokens([token.id]) == ["Ġbats"]
    assert tokenizer("bats", add_special_tokens=False)["input_ids"] != [token.id]  # alone it would be b + ats
    assert layout.text[token.start : token.end] == " bats"


def test_sentencepiece_word_start_tokens_belong_to_the_item():
    encoder = build("SentencePiece (T5)")
    layout = encoder.layout("a baseball game with bats, 85mm lens")
    start = layout.text.index("85mm")
    rows = layout.item_rows(start, start + len("85mm lens"))
    ids = [t.id for r, t in layout.token_rows() if r in rows]
    assert ids == encoder.tokenizer("85mm lens", add_special_tokens=False)["input_ids"]  # with its dummy prefix
    assert encoder.tokenizer.convert_ids_to_tokens(ids)[:3] == ["▁", "8", "5"]  # digits split one by one


def test_the_report_says_why_when_a_text_encoder_gets_other_tokens(nlp):
    """An encoder that only takes text (as the WebUI's) and tokenizes it without the leading space gets other
    ids: the item is left alone and the report names both token lists."""
    encoder = build("byte-level BPE (GPT-2)")

    class StrippingTextEncoder(GenericEncoder):
        def encode_isolated(self, requests):
            retokenized = []
            for request in requests:
                ids = self.tokenizer(request.text.strip(), add_special_tokens=False)["input_ids"]
                retokenized.append(ItemRequest(request.text, tuple(ids), request.start))
            return super().encode_isolated(retokenized)

    stripping = StrippingTextEncoder(encoder.tokenizer, encoder.model, causal=True, chunk_length=64, end_token=False)
    result = FlowPatcher(stripping, FlowOptions(detect=False), nlp=nlp).run("a baseball game with ~bats~")
    bats = result.report.items[-1]
    assert not bats.patched and torch.equal(result.patched, result.original)
    assert "encoded alone, ' bats' gives tokens" in bats.reason and "but the prompt has" in bats.reason


def test_chunks_follow_the_encoders_own_format():
    t5 = build("SentencePiece (T5)")
    assert (t5.format.leading, t5.format.rows, t5.format.tokens) == (0, 128, 127)  # no start token, EOS
    llm = build("SentencePiece (Llama 2)")
    assert (llm.format.leading, llm.format.rows, llm.format.tokens) == (1, 256, 255)  # BOS, no end token
    layout = llm.layout("bats " * 300)  # "▁bats" is one token
    assert len(layout.chunks) == 2 and layout.n_rows == 512
    assert llm.encode(layout).rows.shape == (512, 32)
