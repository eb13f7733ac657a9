"""The template and layer handling of the language-model families on a trained causal LLM: SmolLM2-135M-Instruct
(`flowcore.testing.smollm2_encoder`, through `GenericEncoder.for_causal_lm`) reads prompts inside Qwen-Image's chat
template (SmolLM2 speaks the same ChatML: `<|im_start|>`, `<|im_end|>`) with the template's rows before the prompt
dropped and the last layer after the final norm, and inside Lumina 2's system prompt, kept, with layer -2 and no
final norm. On weights whose outputs mean something: the template is what the prompt's first token sees, an item
alone keeps the template and loses only the prompt before it, and patching puts exactly that on its rows."""

from __future__ import annotations

import pytest
import torch

from flowcore import FlowOptions, FlowPatcher, GenericEncoder
from flowcore.encoders.base import ItemRequest
from flowcore.encoders.templated import PromptTemplate, TemplatedEncoder, template_around

QWEN_IMAGE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
# Lumina 2's system prompt ends in a space, which Gemma's SentencePiece gives the prompt's first word; SmolLM2's
# byte-level BPE would merge it into that word too (" a"), so the template here ends in a line break instead.
LUMINA = "You are an assistant designed to generate superior images. <Prompt Start>\n{}"
PROMPT = "a baseball game with bats flying over the stadium"


@pytest.fixture(scope="module")
def smollm2():
    from flowcore.testing import smollm2_encoder

    return smollm2_encoder()


def _encoders(smollm2):
    """Qwen-Image's handling (chat template, its rows before the prompt dropped, last layer) and Lumina 2's
    (start token and system prompt kept, layer -2)."""
    tokenizer, model = smollm2.tokenizer, smollm2.model
    qwen = template_around(tokenizer, QWEN_IMAGE)
    qwen = PromptTemplate(qwen.prefix, qwen.suffix, first_row=len(qwen.prefix))
    lumina = template_around(tokenizer, LUMINA)
    lumina = PromptTemplate((tokenizer.bos_token_id, *lumina.prefix))
    return {
        "qwen_image": (TemplatedEncoder(GenericEncoder.for_causal_lm(tokenizer, model, layer=-1), qwen), -1),
        "lumina2": (TemplatedEncoder(GenericEncoder.for_causal_lm(tokenizer, model, layer=-2), lumina), -2),
    }


def _forward(smollm2, ids, layer):
    with torch.no_grad():
        out = smollm2.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[layer][0]


@pytest.mark.parametrize("family", ["qwen_image", "lumina2"])
def test_template_and_layer_on_a_trained_llm(smollm2, nlp, family):
    encoder, layer = _encoders(smollm2)[family]
    template = encoder.template
    layout = encoder.layout(PROMPT)
    (chunk,) = layout.chunks
    ids = [t.id for t in chunk]
    text = QWEN_IMAGE.format(PROMPT) if family == "qwen_image" else LUMINA.format(PROMPT)
    whole_ids = smollm2.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert template.whole(ids) == whole_ids if family == "qwen_image" else template.whole(ids)[1:] == whole_ids

    # The rows: the model's own forward of the templated prompt, at the layer, the dropped template rows left out.
    rows = encoder.encode(layout).rows
    whole = _forward(smollm2, template.whole(ids), layer)
    assert rows.shape[0] == layout.n_rows == whole.shape[0] - template.first_row
    torch.testing.assert_close(rows, whole[template.first_row :], atol=1e-4, rtol=0)
    if family == "qwen_image":
        assert layout.leading == 0 and layout.n_rows == len(ids) + len(template.suffix)  # from the prompt on
    else:  # Gemma-style: layer -2 is not the final norm's output
        assert not torch.allclose(rows, _forward(smollm2, template.whole(ids), -1), atol=1e-3)

    # Causal, inside the template: the prompt's tokens "alone" at their own positions are the prompt's rows.
    (alone,) = encoder.encode_isolated([ItemRequest(PROMPT, tuple(ids), layout.leading)])
    torch.testing.assert_close(alone.rows, rows[layout.leading : layout.leading + len(ids)], atol=1e-4, rtol=0)

    # " bats" alone at its own positions keeps the template and loses "a baseball game with": its rows change,
    # and with trained weights they change much more than rounding; without the template they are others again.
    bats = layout.item_rows(PROMPT.index("bats"), PROMPT.index("bats") + 4)
    bats_ids = tuple(ids[r - layout.leading] for r in bats)
    (at_place,) = encoder.encode_isolated([ItemRequest(" bats", bats_ids, bats[0])])
    in_prompt = rows[bats]
    moved = torch.nn.functional.cosine_similarity(at_place.rows, in_prompt, dim=-1)
    assert bool((moved < 0.999).all())
    (bare,) = GenericEncoder.for_causal_lm(smollm2.tokenizer, smollm2.model, layer=layer).encode_isolated(
        [ItemRequest(" bats", bats_ids, 1)]
    )
    (in_template,) = encoder.encode_isolated([ItemRequest(" bats", bats_ids, layout.leading)])
    assert not torch.allclose(bare.rows, in_template.rows, atol=1e-2)

    # Patching " bats": its rows become the item alone right after the template (the family's own encode of the
    # item as the whole prompt), every other row stays.
    result = FlowPatcher(encoder, nlp=nlp).patch(
        rows, PROMPT.replace("bats", "~bats~"), layout=layout, options=FlowOptions(mode="markers")
    )
    (patched,) = result.report.patched_items
    assert patched.text == "bats"
    alone_whole = encoder.encode(encoder.layout(" bats")).rows[encoder.layout(" bats").leading :][: len(bats)]
    torch.testing.assert_close(result.patched[bats], alone_whole, atol=1e-4, rtol=0)
    others = [r for r in range(rows.shape[0]) if r not in bats]
    assert torch.equal(result.patched[others], rows[others])
