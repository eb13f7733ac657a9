"""`flowcore.testing.causal_gguf_encoder`, the loader of any causal LLM stored as one GGUF file, on SmolLM2-135M:
it reads the same tokenizer and weights as `smollm2_encoder` (which now goes through it), so a prompt's encoding
is the same to the bit, and `layer` picks the hidden states it reads."""

from __future__ import annotations

import pytest
import torch

from flowcore import GenericEncoder
from flowcore.errors import ModelNotFoundError
from flowcore.testing import SMOLLM2_GGUF, causal_gguf_encoder, smollm2_encoder, smollm2_folder

PROMPT = "a baseball game with bats, a red car"


@pytest.fixture(scope="module")
def reference() -> GenericEncoder:
    return smollm2_encoder()


@pytest.fixture(scope="module")
def from_file() -> GenericEncoder:
    return causal_gguf_encoder(smollm2_folder() / SMOLLM2_GGUF)  # the tokenizer read from the GGUF itself


def test_a_gguf_file_encodes_a_prompt_exactly_as_smollm2_encoder(reference, from_file):
    layout, expected = from_file.layout(PROMPT), reference.layout(PROMPT)
    assert [t.id for t in layout.chunks[0]] == [t.id for t in expected.chunks[0]]
    assert (from_file.causal, from_file.layer, from_file.start_id, from_file.pad_id) == (True, -1, 1, 2)
    rows, reference_rows = from_file.encode(layout).rows, reference.encode(expected).rows
    assert rows.shape == reference_rows.shape == (256, 576)  # (rows, dim): one chunk of SmolLM2's hidden size
    assert torch.equal(rows, reference_rows)


def test_layer_picks_the_hidden_states_read(reference, monkeypatch):
    import transformers

    # the weights already loaded stand in for a second read of the file
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: reference.model)
    middle = causal_gguf_encoder(smollm2_folder() / SMOLLM2_GGUF, layer=15, tokenizer=reference.tokenizer)
    layout = middle.layout(PROMPT)
    rows = middle.encode(layout).rows
    assert middle.layer == 15
    ids, positions = middle.frame([t.id for t in layout.chunks[0]], layout.leading)  # start token, then the prompt
    with torch.no_grad():
        out = reference.model(
            input_ids=torch.tensor([ids]), position_ids=torch.tensor([positions]), output_hidden_states=True
        )
    torch.testing.assert_close(rows[: len(ids)], out.hidden_states[15][0], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(rows, reference.encode(layout).rows)  # not the last layer's


def test_a_missing_file_says_what_to_pass(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no-such.gguf"):
        causal_gguf_encoder(tmp_path / "no-such.gguf")
