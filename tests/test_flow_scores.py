"""benchmarks/flow_scores.py's occlusion, on tiny random-weight encoders: a causal Llama and a bidirectional BERT.

Total occlusion hides a source from every token (as if its tokens were padding); direct occlusion hides it from
one item's queries only. References are built with the encoders' own `encode`.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

from flowcore import GenericEncoder

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
PROMPT = "a baseball game with bats"


@pytest.fixture(scope="module")
def flow_scores():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports benchmarks/leakage.py, as when it is run
    spec = importlib.util.spec_from_file_location("flow_scores", BENCHMARKS / "flow_scores.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["flow_scores"] = module  # its dataclasses look their module up while they are made
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
        del sys.modules["flow_scores"]
    return module


def _encoder(causal: bool, tokenizer, layers: int) -> GenericEncoder:
    torch.manual_seed(0)
    size = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=layers)
    if causal:
        config = LlamaConfig(**size, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
        return GenericEncoder.for_causal_lm(tokenizer, LlamaForCausalLM(config).eval())
    return GenericEncoder(tokenizer, BertModel(BertConfig(**size, num_attention_heads=4)).eval(), causal=False)


def _rows(layout, text: str) -> tuple[int, ...]:
    start = layout.text.index(text)
    return tuple(layout.item_rows(start, start + len(text)))


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_nothing_occluded_is_the_plain_encoding_and_total_occlusion_is_padding(flow_scores, tokenizer, causal):
    encoder = _encoder(causal, tokenizer, layers=2)
    layout = encoder.layout(PROMPT)
    source = _rows(layout, "baseball game")
    plain, total = flow_scores.occluded_rows(encoder, layout, [flow_scores.Occlusion(), flow_scores.Occlusion(source)])
    length = plain.shape[0]
    torch.testing.assert_close(plain, encoder.encode(layout).rows[:length], atol=1e-5, rtol=1e-4)

    # the source's tokens turned into the padding token, encoded as a prompt
    tokens = [replace(t, id=encoder.pad_id) if row in source else t for row, t in layout.token_rows()]
    padded = encoder.encode(replace(layout, chunks=(tuple(tokens),))).rows[:length]
    torch.testing.assert_close(total, padded, atol=1e-5, rtol=1e-4)
    before = range(source[0])
    assert torch.allclose(total[before], plain[before], atol=1e-6) == causal  # a causal token sees only earlier ones
    assert not torch.allclose(total[-1], plain[-1], atol=1e-4)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_direct_occlusion_changes_only_the_items_rows_in_one_layer(flow_scores, tokenizer, causal):
    encoder = _encoder(causal, tokenizer, layers=1)
    layout = encoder.layout(PROMPT)
    item, source = _rows(layout, "bats"), _rows(layout, "baseball game")
    plain, direct = flow_scores.occluded_rows(
        encoder, layout, [flow_scores.Occlusion(), flow_scores.Occlusion(queries=item, keys=source)]
    )
    others = [row for row in range(plain.shape[0]) if row not in item]
    torch.testing.assert_close(direct[others], plain[others], atol=1e-6, rtol=1e-5)
    assert (direct[list(item)] - plain[list(item)]).abs().amax(dim=-1).min() > 1e-4


def test_a_prompt_longer_than_one_chunk_is_refused(flow_scores, tokenizer):
    encoder = _encoder(False, tokenizer, layers=1)
    layout = encoder.layout("a red car BREAK a baseball game with bats")
    with pytest.raises(ValueError, match="one chunk"):
        flow_scores.occluded_rows(encoder, layout, [flow_scores.Occlusion()])
