"""Tests of the WebUI stand-in itself (not of the extension)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import standin  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from modules import errors, prompt_parser, script_callbacks, scripts, shared  # noqa: E402
from modules.processing import StableDiffusionProcessing  # noqa: E402

# --------------------------------------------------------------------------------------------
# prompt_parser: examples from the WebUI's doctests (facts about its behaviour)
# --------------------------------------------------------------------------------------------

SCHEDULES_10 = [
    ("test", [[10, "test"]]),
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", [[10, "a [unbalanced"]]),
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
    # the WebUI's doctest expects [[5, 'a  c'], [10, 'a {b|d{ c']] ("not handling this right
    # now"); the real parser (lark 1.1.2 and 1.3.1) actually returns the prompt unchanged
    ("a [{b|d{:.5] c", [[10, "a [{b|d{:.5] c"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", [[i, "a" if i % 2 else "(b:1.1)"] for i in range(1, 11)]),
    ("[fe|]male", [[i, "female" if i % 2 else "male"] for i in range(1, 11)]),
    ("[fe|||]male", [[i, "female" if i % 4 == 1 else "male"] for i in range(1, 11)]),
]

# checked against the real module
SCHEDULES_EXTRA = [
    ("a | b [c:3]", [[10, "a | b [c:3]"]]),  # a stray | makes the whole prompt unparsed
    ("[a:3.0]", [[10, ""]]),
    ("[a:-1]", [[10, "a"]]),
    ("[a:1e1]", [[10, ""]]),
    ("[a::3]", [[3, "a"], [10, ""]]),
    ("[a]", [[10, "[a]"]]),
    ("[[a|b]:3]", [[1, ""], [2, ""], [3, ""], [4, "b"], [5, "a"], [6, "b"], [7, "a"], [8, "b"], [9, "a"], [10, "b"]]),
    ("(a [b:3])", [[3, "(a )"], [10, "(a b)"]]),
    ("[a:b:1.5]", [[10, "a"]]),
    ("[a [b:3]:5]", [[3, ""], [5, ""], [10, "a b"]]),
    ("[a\\:b:3]", [[3, ""], [10, "a\\:b"]]),
]


@pytest.mark.parametrize(("prompt", "expected"), SCHEDULES_10 + SCHEDULES_EXTRA)
def test_schedules_match_webui(prompt, expected):
    assert prompt_parser.get_learned_conditioning_prompt_schedules([prompt], 10)[0] == expected


@pytest.mark.parametrize(
    ("prompt", "expected"), [("a [b:.5] c", [[10, "a b c"]]), ("a [b:1.5] c", [[5, "a  c"], [10, "a b c"]])]
)
def test_hires_schedules_match_webui(prompt, expected):
    assert prompt_parser.get_learned_conditioning_prompt_schedules([prompt], 10, 10)[0] == expected


def test_identical_prompts_share_schedule_object():
    a, b, c = prompt_parser.get_learned_conditioning_prompt_schedules(["x [y:2]", "z", "x [y:2]"], 5)
    assert a is c and a is not b


ATTENTION = [
    ("normal text", [["normal text", 1.0]]),
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("(unbalanced", [["unbalanced", 1.1]]),
    ("\\(literal\\]", [["(literal]", 1.0]]),
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ["a ", 1.0],
            ["house", 1.5730000000000004],
            [" ", 1.1],
            ["on", 1.0],
            [" a ", 1.1],
            ["hill", 0.55],
            [", sun, ", 1.1],
            ["sky", 1.4641000000000006],
            [".", 1.1],
        ],
    ),
    ("a BREAK b", [["a", 1.0], ["BREAK", -1], ["b", 1.0]]),
]


@pytest.mark.parametrize(("text", "expected"), ATTENTION)
def test_parse_prompt_attention_matches_webui(text, expected):
    assert prompt_parser.parse_prompt_attention(text) == expected


def test_multicond_prompt_list():
    indexes, flat, by_text = prompt_parser.get_multicond_prompt_list(["a cat AND a dog:0.5", "a dog AND a cat :1.5"])
    # real output: sub-prompts keep their leading space, so " a cat" and "a cat" differ
    assert indexes == [[(0, 1.0), (1, 0.5)], [(2, 1.0), (3, 1.5)]]
    assert list(flat) == ["a cat", " a dog", "a dog", " a cat"]
    assert by_text == {"a cat": 0, " a dog": 1, "a dog": 2, " a cat": 3}
    assert isinstance(flat, prompt_parser.SdConditioning)


# --------------------------------------------------------------------------------------------
# encoder
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():  # the WebUI encodes under no_grad (processing) -- so do direct calls here
        yield


@pytest.fixture
def sd1():
    return standin.WebUI("sd1")


@pytest.fixture
def sdxl():
    return standin.WebUI("sdxl")


def open_clip_by_hand(model, ids, token_rows=None):
    """An open_clip text tower computed from its raw parameters, batch-first: token (or the given
    ``token_rows``) + position embeddings, then per block pre-LN causal multi-head attention and a
    pre-LN GELU MLP, each added to the residual. Returns every block's input and the last block's
    output (no ln_final)."""
    table = getattr(model.token_embedding, "wrapped", model.token_embedding).weight
    x = (table[ids] if token_rows is None else token_rows) + model.positional_embedding
    n, length, width = x.shape
    causal = torch.full((length, length), float("-inf")).triu(1)
    states = [x]
    for block in model.transformer.resblocks:
        heads = block.attn.num_heads
        h = F.layer_norm(x, (width,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
        q, k, v = (h @ block.attn.in_proj_weight.T + block.attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-1, -2) / (width // heads) ** 0.5 + causal, dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(n, length, width)
        x = x + attended @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
        h = F.layer_norm(x, (width,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps)
        x = (
            x
            + F.gelu(h @ block.mlp.c_fc.weight.T + block.mlp.c_fc.bias) @ block.mlp.c_proj.weight.T
            + block.mlp.c_proj.bias
        )
        states.append(x)
    return states


def test_tokenizer_is_real_clip_bpe():
    tok = standin.shared_tokenizer()
    assert len(tok) == 49408
    assert tok("a photo of a cat", add_special_tokens=False)["input_ids"] == [320, 1125, 539, 320, 2368]
    assert tok.get_vocab()[",</w>"] == 267


def test_tokenize_line_short_prompt(sd1):
    enc = standin.text_encoder()
    chunks, count = enc.tokenize_line("a photo of a (cat:1.5)")
    assert count == 5 and len(chunks) == 1
    (chunk,) = chunks
    assert len(chunk.tokens) == 77 and len(chunk.multipliers) == 77
    assert chunk.tokens[:7] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert chunk.tokens[-1] == 49407 and chunk.multipliers[5] == 1.5 and chunk.multipliers[4] == 1.0


def test_tokenize_line_long_prompt_and_break(sd1):
    enc = standin.text_encoder()
    chunks, count = enc.tokenize_line("cat " * 80)
    assert [len(c.tokens) for c in chunks] == [77, 77] and count == 80
    assert chunks[1].tokens[1:6] == [2368] * 5 and chunks[1].tokens[6] == 49407
    chunks, count = enc.tokenize_line("a cat BREAK a dog")
    assert len(chunks) == 2 and count == 77  # the first chunk counts as a full 75
    assert chunks[1].tokens[1:3] == [320, 1929]


def test_tokenize_line_comma_backtrack(sd1):
    enc = standin.text_encoder()
    text = "cat " * 70 + ", dog dog dog dog dog dog dog"  # comma at index 70, chunk full at 75
    chunks, _ = enc.tokenize_line(text)
    assert chunks[0].tokens[71] == 267 and chunks[0].tokens[72:76] == [49407] * 4
    assert chunks[1].tokens[1:8] == [1929] * 7
    shared.opts.comma_padding_backtrack = 0
    chunks, _ = enc.tokenize_line(text)
    assert chunks[0].tokens[72:76] == [1929] * 4


def test_sd1_conditioning_shape_emphasis_and_clip_skip(sd1):
    model = shared.sd_model
    texts = prompt_parser.SdConditioning(["a cat", "a (cat:1.3)", "cat " * 80])
    z = model.get_learned_conditioning(texts)
    assert z.shape == (3, 154, 32)
    plain = model.get_learned_conditioning(["a cat"])
    transformer = model.cond_stage_model.wrapped.transformer
    ids = torch.tensor([[49406, 320, 2368] + [49407] * 74])
    assert torch.allclose(plain[0], transformer(input_ids=ids).last_hidden_state[0], atol=1e-5)
    # emphasis: the weighted row is scaled, then the whole chunk batch is rescaled to its mean
    weighted = model.get_learned_conditioning(["a (cat:1.3)"])[0]
    mult = torch.ones(77)
    mult[2] = 1.3
    expected = plain[0] * mult[:, None]
    expected = expected * (plain[0].mean() / expected.mean())
    assert torch.allclose(weighted, expected, atol=1e-5)
    shared.opts.CLIP_stop_at_last_layers = 2
    skipped = model.get_learned_conditioning(["a cat"])[0]
    out = transformer(input_ids=ids, output_hidden_states=True)
    assert torch.allclose(
        skipped, getattr(transformer, "text_model", transformer).final_layer_norm(out.hidden_states[-2])[0], atol=1e-5
    )


def test_get_learned_conditioning_dedups(sd1):
    c = prompt_parser.get_learned_conditioning(shared.sd_model, ["a [cat:dog:2]", "x", "a [cat:dog:2]"], 4)
    assert c[0] is c[2]
    assert [e.end_at_step for e in c[0]] == [2, 4] and c[0][0].cond.shape == (77, 32)
    assert isinstance(c[0][0], prompt_parser.ScheduledPromptConditioning)
    m = prompt_parser.get_multicond_learned_conditioning(shared.sd_model, ["b AND a:0.5", "b"], 4)
    assert m.batch[0][0].schedules is m.batch[1][0].schedules and m.batch[0][1].weight == 0.5


def test_sdxl_conditioning(sdxl):
    model = shared.sd_model
    assert model.is_sdxl and not model.is_sd1 and not model.is_sd2
    enc = standin.text_encoder()
    assert enc is model.conditioner.embedders[0] and enc.tokenize_line("a cat")[1] == 2
    c = model.get_learned_conditioning(prompt_parser.SdConditioning(["a cat", "cat " * 80], width=64, height=64))
    assert c["crossattn"].shape == (2, 154, 80) and c["vector"].shape == (2, 96)
    g = model.conditioner.embedders[1]
    ids = torch.tensor([[49406, 320, 2368, 49407] + [0] * 73])  # G pads with 0 after the first EOS
    states = open_clip_by_hand(g.wrapped.model, ids)
    assert torch.allclose(c["crossattn"][0, :77, 32:], states[-2][0], atol=1e-5)  # penultimate, no ln_final
    ln = g.wrapped.model.ln_final
    pooled = F.layer_norm(states[-1][0, 3], (48,), ln.weight, ln.bias, ln.eps) @ g.wrapped.model.text_projection
    assert torch.allclose(c["vector"][0, :48], pooled, atol=1e-5)  # pooled first
    uc = model.get_learned_conditioning(prompt_parser.SdConditioning([""], is_negative_prompt=True))
    assert uc["crossattn"].abs().sum() == 0 and uc["vector"][:, :48].abs().sum() == 0


# --------------------------------------------------------------------------------------------
# processing: hooks, caches, records
# --------------------------------------------------------------------------------------------


class Recorder(scripts.Script):
    calls: list = []
    patch = False

    def title(self):
        return "Recorder"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        import gradio as gr
        from modules.ui_components import InputAccordion

        with InputAccordion(False, label="Recorder") as enabled:
            strength = gr.Slider(0, 1, value=0.5, label="Strength")
        return [enabled, strength]

    def process(self, p, enabled, strength):
        self.calls.append(("process", enabled, strength))

    def before_process_batch(self, p, enabled, strength, **kwargs):
        self.calls.append(("before_process_batch", kwargs["batch_number"]))

    def process_batch(self, p, enabled, strength, **kwargs):
        self.calls.append(("process_batch", kwargs["batch_number"]))

    def process_before_every_sampling(self, p, enabled, strength, **kwargs):
        self.calls.append(("process_before_every_sampling", p.is_hr_pass, sorted(kwargs)))
        if enabled:
            for parts in kwargs["c"].batch:
                for part in parts:
                    for i, entry in enumerate(part.schedules):
                        part.schedules[i] = entry._replace(cond=entry.cond * 0 + 7)

    def postprocess(self, p, processed, enabled, strength):
        self.calls.append(("postprocess",))


@pytest.fixture
def recorder(sd1):
    Recorder.calls = []
    sd1.add_script(Recorder)
    sd1.build_ui()
    return sd1


def test_script_args_sliced_and_hooks_in_order(recorder):
    script = recorder.runner.script("Recorder")
    assert (script.args_from, script.args_to) == (1, 3)
    res = recorder.txt2img(
        prompt="a cat", n_iter=2, enable_hr=True, hr_second_pass_steps=2, alwayson={"Recorder": [False]}
    )
    assert Recorder.calls == [
        ("process", False, 0.5),
        ("before_process_batch", 0),
        ("process_batch", 0),
        ("process_before_every_sampling", False, ["c", "noise", "uc", "x"]),
        ("process_before_every_sampling", True, ["c", "noise", "uc", "x"]),
        ("before_process_batch", 1),
        ("process_batch", 1),
        ("process_before_every_sampling", False, ["c", "noise", "uc", "x"]),
        ("process_before_every_sampling", True, ["c", "noise", "uc", "x"]),
        ("postprocess",),
    ]
    assert [(r.pass_name, r.iteration, r.steps) for r in res.sampling_records] == [
        ("first", 0, 3),
        ("hires", 0, 2),
        ("first", 1, 3),
        ("hires", 1, 2),
    ]
    assert not errors.reported


def test_patch_in_place_reaches_sampler_and_leaks_through_cache(recorder):
    patched = recorder.txt2img(prompt="a cat", alwayson={"Recorder": [True]})
    assert torch.all(patched.sampling_records[0].text_cond[0] == 7)
    # a later run with the same prompt and settings gets the cached (patched) object back
    plain = recorder.txt2img(prompt="a cat", alwayson={"Recorder": [False]})
    assert torch.all(plain.sampling_records[0].text_cond[0] == 7)
    assert StableDiffusionProcessing.cached_c[1] is not None
    # a different cache key (here: clip skip) re-encodes
    shared.opts.CLIP_stop_at_last_layers = 2
    fresh = recorder.txt2img(prompt="a cat", alwayson={"Recorder": [False]})
    assert not torch.all(fresh.sampling_records[0].text_cond[0] == 7)


def test_sampler_follows_schedule_and_and_weights(sd1):
    res = sd1.txt2img(prompt="a [cat:dog:1] AND a bird:0.5", steps=3)
    (rec,) = res.sampling_records
    assert rec.conds_list[0] == [[(0, 1.0), (1, 0.5)]]
    assert rec.text_cond[0].shape == (2, 77, 32)
    # the sampler counts steps from 0 and an entry holds while step <= end_at_step, so the
    # schedule [[1, "a cat"], [3, "a dog"]] gives cat at sampler steps 0 and 1, dog at step 2
    assert torch.equal(rec.text_cond[0][0], rec.text_cond[1][0])
    assert not torch.equal(rec.text_cond[1][0], rec.text_cond[2][0])


def test_refiner_switch_calls_setup_conds_without_hook(recorder):
    refiner = standin.make_sd1_model(seed=5, name="refiner")
    res = recorder.txt2img(
        prompt="a cat", steps=4, refiner_checkpoint=refiner, refiner_switch_at=0.5, alwayson={"Recorder": [True]}
    )
    (rec,) = res.sampling_records
    assert rec.refiner_switched
    assert torch.all(rec.text_cond[1] == 7) and not torch.all(rec.text_cond[2] == 7)
    assert shared.sd_model is recorder.model


def test_callbacks_xyz_and_launch(recorder):
    def strip(params):
        params.prompt = params.prompt.replace("@@", "")

    script_callbacks.on_before_token_counter(strip)
    assert recorder.count_tokens("a @@cat@@") == (2, 75)

    def settings():
        shared.opts.add_option("my_flag", shared.OptionInfo(True, "My flag"))

    script_callbacks.on_ui_settings(settings)
    script_callbacks.ui_settings_callback()
    assert shared.opts.my_flag is True

    xyz = recorder.xyz_grid_module()
    assert xyz.__name__ == "xyz_grid.py"
    xyz.axis_options.append(xyz.AxisOption("[Recorder] Strength", float, lambda p, x, xs: None))
    assert any(o.label == "[Recorder] Strength" for o in xyz.axis_options)

    import launch

    assert launch.is_installed("torch") and not launch.is_installed("surely-not-a-package-xyz")
    launch.run_pip("install spacy", "spacy")
    assert launch.pip_calls[-1] == ("install spacy", "spacy")


# --------------------------------------------------------------------------------------------
# OpenCLIP towers: SD 2.x and SDXL's G
# --------------------------------------------------------------------------------------------


def test_open_clip_tower_has_open_clip_layout_and_numerics():
    from modules.sd_models import FrozenOpenCLIPEmbedder
    from modules.sd_models_xl import FrozenOpenCLIPEmbedder2

    model = standin.tiny_open_clip(seed=3, width=40, layers=3, embed_dim=24)
    assert isinstance(model.token_embedding, torch.nn.Embedding) and model.token_embedding.weight.shape == (49408, 40)
    assert isinstance(model.positional_embedding, torch.nn.Parameter) and model.positional_embedding.shape == (77, 40)
    assert isinstance(model.text_projection, torch.nn.Parameter) and model.text_projection.shape == (40, 24)
    mask = model.attn_mask
    assert mask.shape == (77, 77) and "attn_mask" not in model.state_dict()  # a non-persistent buffer
    above = torch.ones(77, 77, dtype=torch.bool).triu(1)
    assert torch.all(mask[above] == float("-inf")) and torch.all(mask[~above] == 0)
    block = model.transformer.resblocks[0]
    assert isinstance(block.attn, torch.nn.MultiheadAttention) and not block.attn.batch_first
    assert [name for name, _ in block.mlp.named_children()] == ["c_fc", "gelu", "c_proj"]
    assert model.ln_final.bias.abs().sum() > 0  # trained-like LayerNorms

    ids = torch.tensor([[49406, 320, 2368, 49407] + [0] * 73, [49406, 1929, 49407] + [0] * 74])
    states = open_clip_by_hand(model, ids)

    def ln_final(x):
        return F.layer_norm(x, (40,), model.ln_final.weight, model.ln_final.bias, model.ln_final.eps)

    sgm = FrozenOpenCLIPEmbedder2(model, layer="penultimate").encode_with_transformer(ids)
    assert torch.allclose(sgm["penultimate"], states[-2], atol=1e-5)
    assert torch.allclose(sgm["last"], states[-1], atol=1e-5)
    pooled = torch.stack([ln_final(states[-1][0, 3]), ln_final(states[-1][1, 2])]) @ model.text_projection
    assert torch.allclose(sgm["pooled"], pooled, atol=1e-5)
    assert torch.allclose(model.encode_text(ids), pooled, atol=1e-5)

    ldm = FrozenOpenCLIPEmbedder(model, layer="penultimate")
    assert ldm.layer_idx == 1
    assert torch.allclose(ldm.encode_with_transformer(ids), ln_final(states[-2]), atol=1e-5)
    last = FrozenOpenCLIPEmbedder(model, layer="last")
    assert last.layer_idx == 0 and torch.allclose(last.encode_with_transformer(ids), ln_final(states[-1]), atol=1e-5)


def test_sd2_conditioning():
    standin.WebUI("sd2")
    model = shared.sd_model
    assert model.is_sd2 and not model.is_sd1 and not model.is_sdxl
    enc = standin.text_encoder()
    assert enc is model.cond_stage_model and type(enc).__name__ == "FrozenOpenCLIPEmbedderWithCustomWords"
    assert (enc.id_start, enc.id_end, enc.id_pad, enc.comma_token) == (49406, 49407, 0, 267)
    assert enc.wrapped.layer == "penultimate" and enc.wrapped.layer_idx == 1
    chunks, count = enc.tokenize_line("a photo of a (cat:1.5)")
    assert count == 5 and chunks[0].tokens[:7] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert chunks[0].tokens[7:] == [49407] * 70  # padding with 0 happens when encoding

    c = model.get_learned_conditioning(prompt_parser.SdConditioning(["a cat", "cat " * 80]))
    assert c.shape == (2, 154, 40)
    ids = torch.tensor([[49406, 320, 2368, 49407] + [0] * 73])
    tower = enc.wrapped.model
    expected = F.layer_norm(open_clip_by_hand(tower, ids)[-2], (40,), tower.ln_final.weight, tower.ln_final.bias)
    assert torch.allclose(c[0, :77], expected[0], atol=1e-5)
    shared.opts.CLIP_stop_at_last_layers = 2  # ignored for OpenCLIP
    assert torch.allclose(model.get_learned_conditioning(["a cat"])[0], expected[0], atol=1e-5)
    weighted = model.get_learned_conditioning(["a (cat:1.3)"])[0]
    assert torch.isfinite(weighted).all() and not torch.allclose(weighted, expected[0])
    res = standin.WebUI("sd2").txt2img(prompt="a cat", steps=2)
    assert res.sampling_records[0].text_cond[0].shape == (1, 77, 40) and not errors.reported


# --------------------------------------------------------------------------------------------
# textual inversion
# --------------------------------------------------------------------------------------------


def test_every_text_encoder_token_embedding_is_wrapped():
    from modules.sd_hijack import EmbeddingsWithFixes
    from modules.sd_hijack_clip import _text_model

    def check(module, key):
        assert isinstance(module, EmbeddingsWithFixes) and isinstance(module.wrapped, torch.nn.Embedding)
        assert module.textual_inversion_key == key

    standin.WebUI("sd1")
    check(_text_model(shared.sd_model.cond_stage_model.wrapped.transformer).embeddings.token_embedding, "clip_l")
    standin.WebUI("sd2")
    check(shared.sd_model.cond_stage_model.wrapped.model.token_embedding, "clip_l")
    standin.WebUI("sdxl")
    embedder_l, embedder_g = shared.sd_model.conditioner.embedders[:2]
    check(_text_model(embedder_l.wrapped.transformer).embeddings.token_embedding, "clip_l")
    check(embedder_g.wrapped.model.token_embedding, "clip_g")


def test_embedding_database_longest_match_and_reregistering(sd1):
    enc = standin.text_encoder()
    standin.add_embedding("zorb", vectors=2, seed=1)
    long = standin.add_embedding("zorb-plus", vectors=3, seed=2)
    db = standin.sd_hijack.model_hijack.embedding_db
    short = db.word_embeddings["zorb"]  # the folder was reloaded: new objects, as in the WebUI
    short_ids, long_ids = enc.tokenize(["zorb", "zorb-plus"])
    assert long_ids[: len(short_ids)] == short_ids and len(long_ids) > len(short_ids)
    assert [ids for ids, _ in db.ids_lookup[short_ids[0]]] == [long_ids, short_ids]  # longest first
    tokens = enc.tokenize(["a zorb-plus cat zorb"])[0]
    assert db.find_embedding_at_position(tokens, 1) == (long, len(long_ids))
    assert db.find_embedding_at_position(tokens, 1 + len(long_ids) + 1) == (short, len(short_ids))
    assert db.find_embedding_at_position(tokens, 0) == (None, None)
    assert short.vec.shape == (2, 32) and short.vectors == 2 and short.shape == 32 and len(short.shorthash) == 12
    assert list(db.word_embeddings) == ["zorb", "zorb-plus"]
    again = db.register_embedding(short.__class__(torch.zeros(1, 32), "zorb"), shared.sd_model)
    assert [e for _, e in db.ids_lookup[short_ids[0]]] == [long, again]  # same name: the old one is gone
    db.register_embedding_by_name(None, shared.sd_model, "zorb")
    assert "zorb" not in db.word_embeddings and [e for _, e in db.ids_lookup[short_ids[0]]] == [long]


def test_embedding_vectors_enter_the_transformer_after_bos(sd1):
    from modules.sd_hijack_clip import PromptChunkFix

    emb = standin.add_embedding("zorb", vectors=3, seed=1)
    enc = standin.text_encoder()
    (chunk,), count = enc.tokenize_line("a zorb cat")
    assert count == 5 and chunk.fixes == [PromptChunkFix(1, emb)]
    assert chunk.tokens[:7] == [49406, 320, 0, 0, 0, 2368, 49407]

    from modules.sd_hijack_clip import _text_model

    embeddings = _text_model(enc.wrapped.transformer).embeddings
    seen = []
    handle = embeddings.token_embedding.register_forward_hook(lambda m, args, out: seen.append(out.detach().clone()))
    try:
        z = shared.sd_model.get_learned_conditioning(["a zorb cat", "a cat"])
    finally:
        handle.remove()
    assert standin.sd_hijack.model_hijack.fixes is None  # read and cleared by the forward
    (rows,) = seen
    table = embeddings.token_embedding.wrapped.weight
    ids = torch.tensor(chunk.tokens)
    expected = table[ids].clone()
    expected[2:5] = emb.vec  # offset 1 + BOS
    assert torch.equal(rows[0], expected) and torch.equal(
        rows[1], table[torch.tensor([49406, 320, 2368] + [49407] * 74)]
    )
    assert not torch.allclose(z[0, 2:5], z[1, 1:2].expand(3, -1))
    assert standin.sd_hijack.model_hijack.extra_generation_params["TI hashes"] == f"zorb: {emb.shorthash}"


def test_embedding_fixes_follow_the_chunk_columns(sd1):
    emb = standin.add_embedding("zorb", vectors=2, seed=1)
    enc = standin.text_encoder()
    from modules.sd_hijack_clip import _text_model

    token_embedding = _text_model(enc.wrapped.transformer).embeddings.token_embedding
    seen = []
    handle = token_embedding.register_forward_hook(lambda m, args, out: seen.append(out.detach().clone()))
    try:
        shared.sd_model.get_learned_conditioning(["cat " * 80 + "zorb", "zorb dog"])
    finally:
        handle.remove()
    first, second = seen  # one call per chunk column
    assert torch.equal(first[1, 1:3], emb.vec) and not torch.equal(first[0, 1:3], emb.vec)
    assert torch.equal(second[0, 6:8], emb.vec)  # chunk 2 of the long prompt: 5 cats, then zorb
    assert not torch.equal(second[1, 1:3], emb.vec)  # the short prompt's empty second chunk


def test_embeddings_with_fixes_truncates_at_the_end():
    import types

    from modules.sd_hijack import EmbeddingsWithFixes

    table = torch.nn.Embedding(10, 4)
    hijack = types.SimpleNamespace(fixes=None)
    emb = types.SimpleNamespace(name="e", vec={"clip_l": torch.ones(5, 4), "clip_g": torch.full((5, 4), 2.0)})
    wrapped = EmbeddingsWithFixes(table, hijack, textual_inversion_key="clip_g")
    ids = torch.arange(8).reshape(1, 8)
    hijack.fixes = [[(4, emb)]]
    out = wrapped(ids)
    assert hijack.fixes is None and out.shape == (1, 8, 4)
    assert torch.equal(out[0, :5], table(ids)[0, :5]) and torch.all(out[0, 5:] == 2.0)  # 3 of 5 fit
    assert torch.equal(wrapped(ids), table(ids))  # fixes were consumed


def test_sd2_and_sdxl_embeddings_reach_each_encoder():
    standin.WebUI("sdxl")
    emb = standin.add_embedding("zorb", vectors=2, seed=4)
    assert emb.vec["clip_l"].shape == (2, 32) and emb.vec["clip_g"].shape == (2, 48) and emb.shape == 80
    embedder_l, embedder_g = shared.sd_model.conditioner.embedders[:2]
    from modules.sd_hijack_clip import _text_model

    seen = {}
    modules = {
        "l": _text_model(embedder_l.wrapped.transformer).embeddings.token_embedding,
        "g": embedder_g.wrapped.model.token_embedding,
    }
    handles = [m.register_forward_hook(lambda m, a, out, k=k: seen.setdefault(k, out)) for k, m in modules.items()]
    try:
        c = shared.sd_model.get_learned_conditioning(prompt_parser.SdConditioning(["a zorb"], width=64, height=64))
    finally:
        for handle in handles:
            handle.remove()
    assert torch.equal(seen["l"][0, 2:4], emb.vec["clip_l"]) and torch.equal(seen["g"][0, 2:4], emb.vec["clip_g"])
    ids = torch.tensor([[49406, 320, 0, 0, 49407] + [0] * 72])
    g = embedder_g.wrapped.model
    rows = g.token_embedding.wrapped(ids)
    rows[0, 2:4] = emb.vec["clip_g"]
    penultimate = open_clip_by_hand(g, ids, token_rows=rows)[-2]
    assert torch.allclose(c["crossattn"][0, :, 32:], penultimate[0], atol=1e-5)

    standin.WebUI("sd2")
    emb2 = standin.add_embedding("zorb", vectors=1, seed=4)
    assert emb2.vec.shape == (1, 40)
    (chunk,), _ = standin.text_encoder().tokenize_line("zorb")
    assert chunk.fixes[0].offset == 0 and chunk.tokens[:3] == [49406, 0, 49407]


def test_embeddings_of_another_width_are_skipped_on_model_load(sd1):
    standin.add_embedding("zorb", vectors=1)
    db = standin.sd_hijack.model_hijack.embedding_db
    assert "zorb" in db.word_embeddings and db.expected_shape == 32
    standin.WebUI(model=standin.make_sd2_model(), fresh=False)  # loading a checkpoint reloads the folder
    assert db.expected_shape == 40 and "zorb" not in db.word_embeddings and "zorb" in db.skipped_embeddings
    assert standin.text_encoder().tokenize_line("zorb")[0][0].fixes == []


def test_ti_hashes_reach_the_infotext(sd1):
    emb = standin.add_embedding("zorb", vectors=2)
    res = sd1.txt2img(prompt="a zorb cat")
    assert res.p.extra_generation_params["TI hashes"] == f"zorb: {emb.shorthash}"
    rec = res.sampling_records[0]
    plain = standin.WebUI("sd1").txt2img(prompt="a zorb cat").sampling_records[0]  # no embedding: plain words
    assert not torch.allclose(rec.text_cond[0], plain.text_cond[0])


# --------------------------------------------------------------------------------------------
# LoRA on the text encoders
# --------------------------------------------------------------------------------------------


def _linear_weights(model):
    return {
        name: module.weight.detach().clone()
        for name, module in model.cond_stage_model.wrapped.named_modules()
        if isinstance(module, torch.nn.Linear)
    }


def webui_layer_name(name):
    """The WebUI's name of an SD1 ``cond_stage_model.wrapped`` module (transformers 4.x module tree)."""
    if name.startswith("transformer.") and not name.startswith("transformer.text_model."):
        name = "transformer.text_model." + name[len("transformer.") :]
    return name.replace(".", "_")


def _lora_delta(on_disk, layer_name, shape):
    """``scale * up @ down`` with the stand-in's generator for that layer (multiplier 1)."""
    import networks

    net = networks.Network(on_disk.name, on_disk)
    up, down = networks.NetworkModule(net, layer_name, None).up_down(shape)
    assert up.shape == (shape[0], on_disk.rank) and down.shape == (on_disk.rank, shape[1])
    return on_disk.scale * (up @ down)


def test_lora_merges_into_text_encoder_while_active_and_not_after(sd1):
    import networks

    lora = standin.add_lora("detail", seed=3)
    before = _linear_weights(sd1.model)
    plain = sd1.txt2img(prompt="a cat").sampling_records[0].text_cond[0]
    res = sd1.txt2img(prompt="a cat <lora:detail:0.5>")
    assert res.p.prompts == ["a cat "] and [n.name for n in networks.loaded_networks] == ["detail"]
    assert res.p.extra_generation_params["Lora hashes"] == f"detail: {lora.shorthash}"
    with_lora = res.sampling_records[0].text_cond[0]
    assert not torch.allclose(with_lora, plain, atol=1e-4)

    # every Linear of the text encoder: W + 0.5 * delta (deactivate restores nothing)
    after = _linear_weights(sd1.model)
    assert len(after) == 12  # 2 layers x (q, k, v, out, fc1, fc2)
    assert "transformer_text_model_encoder_layers_0_self_attn_q_proj" in sd1.model.network_layer_mapping
    for name, weight in after.items():
        delta = _lora_delta(lora, webui_layer_name(name), weight.shape)
        assert torch.allclose(weight, before[name] + 0.5 * delta, atol=1e-6), name

    # the same conds from a fresh copy of the model with the deltas added by hand
    reference = standin.make_sd1_model(seed=0, name="reference")
    with torch.no_grad():
        for name, module in reference.cond_stage_model.wrapped.named_modules():
            if isinstance(module, torch.nn.Linear):
                module.weight += 0.5 * _lora_delta(lora, webui_layer_name(name), module.weight.shape)
    assert not any(hasattr(m, "network_layer_name") for m in reference.modules())  # never "loaded"
    assert torch.allclose(with_lora[0], reference.get_learned_conditioning(["a cat "])[0], atol=1e-5)

    # a generation without it: activate([]) unloads, and each layer restores itself at its next forward
    again = sd1.txt2img(prompt="a cat")
    assert networks.loaded_networks == []
    assert torch.allclose(again.sampling_records[0].text_cond[0], plain, atol=1e-6)
    assert all(torch.equal(w, before[n]) for n, w in _linear_weights(sd1.model).items())

    # unknown names: the tag is removed, nothing is applied, the WebUI's comment
    unknown = sd1.txt2img(prompt="a cat <lora:nope:1>")
    assert torch.allclose(unknown.sampling_records[0].text_cond[0], plain, atol=1e-6)
    assert "Lora not found: nope" in unknown.p.comments and not errors.reported


def test_lora_merge_is_lazy_and_any_forward_sees_it(sd1):
    import networks
    from modules import extra_networks

    lora = standin.add_lora("detail", seed=3)
    q_proj = next(m for n, m in sd1.model.cond_stage_model.wrapped.named_modules() if n.endswith("0.self_attn.q_proj"))
    original = q_proj.weight.detach().clone()
    p = sd1.make_p(prompt="a cat <lora:detail:2>")
    p.iteration, p.scripts = 0, None
    _, data = extra_networks.parse_prompts(["a cat <lora:detail:2>"])
    extra_networks.activate(p, data)
    assert torch.equal(q_proj.weight, original)  # nothing merged yet
    x = torch.randn(3, original.shape[1])
    y = q_proj(x)  # e.g. an extension running the layers itself
    merged = original + 2 * _lora_delta(lora, q_proj.network_layer_name, original.shape)
    assert torch.allclose(q_proj.weight, merged, atol=1e-6)
    assert torch.allclose(y, x @ merged.T + q_proj.bias, atol=1e-5)
    assert torch.allclose(q_proj(x), y)  # merged once, not again
    extra_networks.deactivate(p, data)
    assert torch.allclose(q_proj.weight, merged, atol=1e-6)  # deactivate keeps it
    networks.load_networks([])
    q_proj(x)
    assert torch.equal(q_proj.weight, original)
    plain_linear = torch.nn.Linear(4, 2)  # layers of no model are untouched by the patch
    assert torch.allclose(plain_linear(torch.ones(1, 4)), plain_linear.weight.sum(1) + plain_linear.bias)


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_lora_reaches_open_clip_attention_and_mlp(family):
    import networks

    webui = standin.WebUI(family)
    lora = standin.add_lora("detail", seed=7)
    model = webui.model
    embedder = model.conditioner.embedders[1] if family == "sdxl" else model.cond_stage_model
    prefix = "1_" if family == "sdxl" else ""
    block = embedder.wrapped.model.transformer.resblocks[0]
    in_proj, out_proj = block.attn.in_proj_weight.detach().clone(), block.attn.out_proj.weight.detach().clone()
    c_fc = block.mlp.c_fc.weight.detach().clone()
    plain = webui.txt2img(prompt="a cat").sampling_records[0].text_cond[0]
    with_lora = webui.txt2img(prompt="a cat <lora:detail>").sampling_records[0].text_cond[0]
    name = prefix + "model_transformer_resblocks_0_attn"
    assert block.attn.network_layer_name == name
    q, k, v = in_proj.chunk(3)
    expected = torch.cat([w + _lora_delta(lora, f"{name}_{p}_proj", w.shape) for w, p in zip((q, k, v), "qkv")])
    assert torch.allclose(block.attn.in_proj_weight, expected, atol=1e-6)
    assert torch.allclose(block.attn.out_proj.weight, out_proj + _lora_delta(lora, name + "_out_proj", out_proj.shape))
    assert torch.allclose(
        block.mlp.c_fc.weight, c_fc + _lora_delta(lora, prefix + "model_transformer_resblocks_0_mlp_c_fc", c_fc.shape)
    )
    if family == "sdxl":
        assert not torch.allclose(with_lora["crossattn"][..., :32], plain["crossattn"][..., :32], atol=1e-4)
        assert not torch.allclose(with_lora["crossattn"][..., 32:], plain["crossattn"][..., 32:], atol=1e-4)
        assert not torch.allclose(with_lora["vector"][:, :48], plain["vector"][:, :48], atol=1e-4)
    else:
        assert not torch.allclose(with_lora, plain, atol=1e-4)
    assert [n.te_multiplier for n in networks.loaded_networks] == [1.0]


# --------------------------------------------------------------------------------------------
# Forge mode (lllyasviel/stable-diffusion-webui-forge dfdcbab6)
# --------------------------------------------------------------------------------------------


def _forge(family):
    return standin.WebUI(family)


def _hf(transformer, ids):
    """A CLIPTextModel run directly: (hidden_states, pooler_output, final_layer_norm)."""
    out = transformer(input_ids=torch.tensor(ids), output_hidden_states=True)
    norm = getattr(transformer, "text_model", transformer).final_layer_norm
    return out.hidden_states, out.pooler_output, norm


def _plain_rows(token_embedding_owner):
    return getattr(token_embedding_owner.token_embedding, "wrapped", token_embedding_owner.token_embedding)


def test_forge_backend_names_and_engine_attributes():
    webui = _forge("forge-sd15")
    from backend import memory_management
    from backend.text_processing import classic_engine, emphasis, parsing
    from transformers import CLIPTextModel

    model = webui.model
    engine = model.text_processing_engine
    assert type(model).__name__ == "StableDiffusion" and model.is_sd1 and not model.is_sdxl
    assert model.cond_stage_model is None and model.forge_objects.clip.cond_stage_model.clip_l is engine.text_encoder
    assert isinstance(engine, classic_engine.ClassicTextProcessingEngine) and not isinstance(engine, torch.nn.Module)
    assert isinstance(engine.text_encoder.transformer, CLIPTextModel)
    assert (engine.id_start, engine.id_end, engine.id_pad, engine.chunk_length) == (49406, 49407, 49407, 75)
    assert (engine.clip_skip, engine.minimal_clip_skip, engine.final_layer_norm, engine.return_pooled) == (
        1,
        1,
        True,
        False,
    )
    assert engine.embedding_key == "clip_l" and engine.embeddings.expected_shape == 32
    wrapper = engine.text_encoder.transformer.text_model.embeddings.token_embedding
    assert isinstance(wrapper, classic_engine.CLIPEmbeddingForTextualInversion)
    assert wrapper.embeddings is engine.embeddings and wrapper.textual_inversion_key == "clip_l"
    assert memory_management.text_encoder_device() == torch.device("cpu")
    assert parsing.parse_prompt_attention("a (b:1.5) BREAK c", "Original") == [
        ["a ", 1.0],
        ["b", 1.5],
        ["", 1.0],
        ["BREAK", -1],
        ["c", 1.0],
    ]
    assert parsing.parse_prompt_attention("a (b:1.5) BREAK c", "None") == [["a (b:1.5) BREAK c", 1.0]]
    assert emphasis.get_current_option("No norm").name == "No norm"
    assert standin.text_encoder() is engine
    sdxl = _forge("forge-sdxl").model
    g = sdxl.text_processing_engine_g
    assert (g.id_pad, g.clip_skip, g.minimal_clip_skip, g.return_pooled, g.text_projection) == (0, 2, 2, True, True)
    assert sdxl.text_processing_engine_l.embeddings.expected_shape == 32 + 48 == g.embeddings.expected_shape


def test_forge_sd15_matches_a1111_except_the_fixed_comma_backtrack():
    """Same CLIP weights: Forge's engine gives the A1111 stand-in's conds (checked there by hand),
    emphasis and clip skip included; Forge's comma backtrack is always 20."""
    a1111 = standin.make_sd1_model(seed=0)
    forge = _forge("forge-sd15").model
    prompts = ["a photo of a (cat:1.3)", "a [dog] BREAK on grass", "cat " * 80]
    for skip in (1, 2):
        shared.opts.CLIP_stop_at_last_layers = skip
        forge.set_clip_skip(skip)
        assert torch.allclose(
            forge.get_learned_conditioning(prompts), a1111.get_learned_conditioning(prompts), atol=1e-5
        )
    engine = forge.text_processing_engine
    text = "cat " * 70 + ", dog dog dog dog dog dog dog"
    shared.opts.comma_padding_backtrack = 0
    chunks, _ = engine.tokenize_line(text)
    assert chunks[0].tokens[72:76] == [49407] * 4 and chunks[1].tokens[1:8] == [1929] * 7


def test_forge_get_learned_conditioning_loads_the_clip_patcher_under_inference_mode():
    webui = _forge("forge-sd15")
    from backend import memory_management

    model = webui.model
    z = model.get_learned_conditioning(["a cat"])
    assert memory_management.load_calls == [model.forge_objects.clip.patcher]
    assert memory_management.current_loaded_models[0].model is model.forge_objects.clip.patcher
    assert z.is_inference()
    transformer = model.text_processing_engine.text_encoder.transformer
    hidden, _, norm = _hf(transformer, [[49406, 320, 2368] + [49407] * 74])
    assert torch.allclose(z[0], norm(hidden[-1])[0], atol=1e-5)


def test_forge_sdxl_conds_by_hand():
    webui = _forge("forge-sdxl")
    model = webui.model
    texts = prompt_parser.SdConditioning(["a cat"], width=64, height=48)
    cond = model.get_learned_conditioning(texts)
    assert cond["crossattn"].shape == (1, 77, 80) and cond["vector"].shape == (1, 48 + 6 * 8)
    ids = [49406, 320, 2368, 49407]
    clip_l = model.forge_objects.clip.cond_stage_model.clip_l.transformer
    clip_g = model.forge_objects.clip.cond_stage_model.clip_g.transformer
    hidden_l, _, _ = _hf(clip_l, [ids + [49407] * 73])
    hidden_g, pooled_g, _ = _hf(clip_g, [ids + [0] * 73])  # G pads with "!" (0) after the first EOS
    assert torch.allclose(cond["crossattn"][0, :, :32], hidden_l[-2][0], atol=1e-5)
    assert torch.allclose(cond["crossattn"][0, :, 32:], hidden_g[-2][0], atol=1e-5)
    assert torch.allclose(cond["vector"][0, :48], clip_g.text_projection(pooled_g)[0], atol=1e-5)
    half = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    sizes = [48, 64, 0, 0, 48, 64]  # height, width, crop top, crop left, target height, target width
    expected = torch.cat([torch.cat([torch.cos(v * half), torch.sin(v * half)]) for v in sizes])
    assert torch.allclose(cond["vector"][0, 48:], expected, atol=1e-5)
    empty = model.get_learned_conditioning(prompt_parser.SdConditioning([""], is_negative_prompt=True))
    assert torch.all(empty["crossattn"] == 0) and torch.all(empty["vector"][:, :48] == 0)
    assert torch.any(empty["vector"][:, 48:] != 0)


def test_forge_sd35_crossattn_layout():
    webui = _forge("forge-sd35")
    model = webui.model
    joint = model.forge_objects.clip.cond_stage_model
    ids = [49406, 320, 2368, 49407]
    hidden_l, pooled_l, _ = _hf(joint.clip_l.transformer, [ids + [49407] * 73])
    hidden_g, pooled_g, _ = _hf(joint.clip_g.transformer, [ids + [0] * 73])
    cond = model.get_learned_conditioning(["a cat"])
    assert cond["crossattn"].shape == (1, 77 + 256, 64) and cond["vector"].shape == (1, 16 + 32)
    assert torch.allclose(cond["crossattn"][0, :77, :16], hidden_l[-1][0], atol=1e-5)  # no final norm
    assert torch.allclose(cond["crossattn"][0, :77, 16:48], hidden_g[-1][0], atol=1e-5)
    assert torch.all(cond["crossattn"][0, :77, 48:] == 0) and torch.all(cond["crossattn"][0, 77:] == 0)  # T5 off
    # L's pooled is NOT projected (Forge projects only when embedding_key != "clip_l"), G's is
    assert torch.allclose(cond["vector"][0, :16], pooled_l[0], atol=1e-5)
    assert torch.allclose(cond["vector"][0, 16:], joint.clip_g.transformer.text_projection(pooled_g)[0], atol=1e-5)
    shared.opts.sd3_enable_t5 = True
    with_t5 = model.get_learned_conditioning(["a cat"])
    t5_ids = standin.forge_standin.t5_tokenizer()(["a cat"], add_special_tokens=False)["input_ids"][0]
    t5 = joint.t5xxl.transformer
    row = torch.tensor([t5_ids + [1] + [0] * (255 - len(t5_ids))])
    assert torch.allclose(with_t5["crossattn"][0, 77:], t5(input_ids=row)[0], atol=1e-5)
    assert torch.allclose(with_t5["crossattn"][0, :77], cond["crossattn"][0, :77])


def test_forge_t5_chunks_a_break_prompt_without_a_token_limit():
    webui = _forge("forge-flux")
    engine = webui.model.text_processing_engine_t5
    tok = standin.forge_standin.t5_tokenizer()
    # each emphasis fragment is tokenized on its own ("a " then "red car")
    a, b1, b2 = (tok([t], add_special_tokens=False)["input_ids"][0] for t in ("a cat", "a ", "red car"))
    b = b1 + b2
    chunks, count = engine.tokenize_line("a cat BREAK a (red car:1.5)")
    assert [len(c.tokens) for c in chunks] == [256, 256] and count == len(a) + 1 + len(b) + 1
    assert chunks[0].tokens == a + [1] + [0] * (255 - len(a))
    assert chunks[1].tokens[: len(b) + 1] == b + [1] and chunks[1].tokens[len(b) + 1 :] == [0] * (255 - len(b))
    assert chunks[1].multipliers[: len(b) + 1] == [1.0] * len(b1) + [1.5] * len(b2) + [1.0]
    long_chunks, long_count = engine.tokenize_line("a red car " * 100)
    assert len(long_chunks) == 1 and len(long_chunks[0].tokens) == long_count > 256  # not cut, not split
    # __call__: every chunk encoded alone and stacked -> one batch entry PER CHUNK (Forge's layout)
    z = engine(["a cat BREAK a red car"])
    t5 = engine.text_encoder
    assert z.shape == (2, 256, 64)
    first = t5(input_ids=torch.tensor([chunks[0].tokens]))[0]
    assert torch.allclose(z[0], first, atol=1e-5)
    # Flux's per-prompt split keeps the first chunk only
    cond = webui.model.get_learned_conditioning(["a cat BREAK a red car"])
    c = prompt_parser.get_learned_conditioning(webui.model, ["a cat BREAK a red car"], 4)[0][0].cond
    assert cond["crossattn"].shape[0] == 2 and torch.allclose(c["crossattn"], first, atol=1e-5)


def test_forge_flux_conds_guidance_and_schnell():
    webui = _forge("forge-flux")
    model = webui.model
    assert type(model).__name__ == "Flux" and type(model.model_config).__name__ == "Flux"
    assert model.use_distilled_cfg_scale and not (model.is_sd1 or model.is_sdxl or model.is_sd3)
    res = webui.txt2img(prompt="a cat", steps=2, distilled_cfg_scale=2.5)
    c = res.sampling_records[0].text_cond[0]
    assert set(c) == {"crossattn", "vector", "guidance"} and c["guidance"].tolist() == [2.5]
    hidden, pooled, _ = _hf(
        model.text_processing_engine_l.text_encoder.transformer, [[49406, 320, 2368] + [49407] * 74]
    )
    assert torch.allclose(c["vector"][0], pooled[0], atol=1e-5)
    t5_ids = standin.forge_standin.t5_tokenizer()(["a cat"], add_special_tokens=False)["input_ids"][0]
    t5 = model.text_processing_engine_t5.text_encoder
    assert torch.allclose(
        c["crossattn"][0], t5(input_ids=torch.tensor([t5_ids + [1] + [0] * (255 - len(t5_ids))]))[0], atol=1e-5
    )
    assert "Distilled CFG Scale: 2.5" in res.infotexts[0]
    schnell = _forge("forge-flux-schnell")
    assert type(schnell.model.model_config).__name__ == "FluxSchnell" and not schnell.model.use_distilled_cfg_scale
    assert "guidance" not in schnell.txt2img(prompt="a cat", steps=2).sampling_records[0].text_cond[0]


class ForgeRecorder(scripts.Script):
    calls: list = []

    def title(self):
        return "ForgeRecorder"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return []

    def process_before_every_sampling(self, p, *args, **kwargs):
        unet = p.sd_model.forge_objects.unet
        self.calls.append((p.is_hr_pass, sorted(kwargs), kwargs["c"], kwargs["uc"], unet))
        p.sd_model.forge_objects.unet = "patched by the script"


def test_forge_hires_hook_twice_cfg1_and_inference_mode():
    webui = _forge("forge-sd15")
    ForgeRecorder.calls = []
    webui.add_script(ForgeRecorder)
    from modules import extra_networks

    res = webui.txt2img(prompt="a cat", negative_prompt="ugly", steps=2, enable_hr=True, hr_second_pass_steps=2)
    p = res.p
    assert [(hr, keys) for hr, keys, *_ in ForgeRecorder.calls] == [
        (False, ["c", "noise", "uc", "x"]),
        (True, ["c", "noise", "uc", "x"]),
        (True, ["c", "noise", "uc", "x"]),
    ]
    original_unet = webui.model.forge_objects_original.unet
    # forge_objects is reset before the first-pass call and between the two hires calls
    assert [call[4] for call in ForgeRecorder.calls] == [original_unet, "patched by the script", original_unet]
    first, hires = res.sampling_records
    assert first.inference_mode and hires.inference_mode
    assert first.text_uncond[0] is not None and first.cfg_scale == 7.0
    # hr_cfg defaults to 1 in Forge: no hires uncond, and the hires conds were made in setup_conds
    assert p.hr_cfg == 1.0 and hires.uc is None and hires.text_uncond == [None, None] and hires.cfg_scale == 1.0
    assert ForgeRecorder.calls[1][3] is None and ForgeRecorder.calls[1][2] is ForgeRecorder.calls[2][2]
    assert [(i, hr) for i, hr, _ in extra_networks.activations] == [(0, False), (0, False), (0, False), (0, True)]
    # CFG scale 1: no uncond at all (the negative prompt is never encoded)
    ForgeRecorder.calls = []
    res = webui.txt2img(prompt="a dog", negative_prompt="never encoded", steps=2, cfg_scale=1)
    assert res.p.uc is None and res.sampling_records[0].text_uncond == [None, None]
    assert ForgeRecorder.calls[0][3] is None
    cached_negative = StableDiffusionProcessing.cached_uc[0][0]  # still the first run's key
    assert list(cached_negative) == ["ugly"]
    with pytest.raises(TypeError):  # Forge-only fields exist only in Forge mode
        standin.WebUI("sd1").make_p(prompt="x", hr_cfg=2.0)
    assert not errors.reported


def test_forge_cond_cache_keeps_extra_params_and_keys_the_distilled_scale():
    webui = _forge("forge-flux")
    from backend import memory_management

    standin.add_embedding("zorb", vectors=2, seed=1)
    shared.opts.emphasis = "No norm"
    res = webui.txt2img(prompt="a zorb (cat:1.2)", steps=2)
    assert res.p.extra_generation_params["TI"] == "zorb" and res.p.extra_generation_params["Emphasis"] == "No norm"
    assert "TI: zorb" in res.infotexts[0]
    cache = StableDiffusionProcessing.cached_c
    assert len(cache) == 3 and cache[2] == {"TI": "zorb", "Emphasis": "No norm"}
    assert cache[0][1:3] == (3.5, 3.5)  # distilled_cfg_scale, hr_distilled_cfg right after the prompts
    calls = len(memory_management.load_calls)
    again = webui.txt2img(prompt="a zorb (cat:1.2)", steps=2)
    assert len(memory_management.load_calls) == calls  # both conds from the caches
    assert again.p.extra_generation_params["TI"] == "zorb"  # replayed from cache[2]
    webui.txt2img(prompt="a zorb (cat:1.2)", steps=2, distilled_cfg_scale=2.0)
    assert len(memory_management.load_calls) == calls + 2  # a new key for c and uc


def test_forge_textual_inversion_matches_a1111_and_sdxl_writes_ti_twice():
    import backend.text_processing.classic_engine as classic_engine

    a1111 = standin.WebUI("sd1")
    standin.add_embedding("zorb", vectors=3, seed=4)
    reference = a1111.model.get_learned_conditioning(["a zorb cat"])
    webui = _forge("forge-sd15")
    emb = standin.add_embedding("zorb", vectors=3, seed=4)
    engine = webui.model.text_processing_engine
    assert emb.vectors == 3 and emb.shape == 32 and not hasattr(emb, "shorthash")
    chunks, _ = engine.tokenize_line("a zorb cat")
    assert chunks[0].fixes[0].offset == 1 and chunks[0].tokens[2:5] == [0, 0, 0]
    classic_engine.last_extra_generation_params = {}
    z = webui.model.get_learned_conditioning(["a zorb cat"])
    assert torch.allclose(z, reference, atol=1e-5)
    assert classic_engine.last_extra_generation_params == {"TI": "zorb"}
    sdxl = _forge("forge-sdxl")
    emb = standin.add_embedding("zorb", vectors=2, seed=5)
    assert set(emb.vec) == {"clip_l", "clip_g"} and emb.shape == 80
    res = sdxl.txt2img(prompt="a zorb cat", steps=2)
    assert res.p.extra_generation_params["TI"] == "zorb, zorb"  # the L and the G engine each append
    # SD3.5: L and G each take only embeddings of their own width; an SDXL-style one fits neither
    sd35 = _forge("forge-sd35")
    data = {"clip_l": torch.randn(1, 16), "clip_g": torch.randn(1, 32)}
    skipped = standin.forge_standin.add_embedding(sd35.model, "both", data=data)
    assert skipped.shape == 16 + 32 and "both" in sd35.model.text_processing_engine_g.embeddings.skipped_embeddings
    flat = standin.add_embedding("flat", vectors=1, seed=6)  # (1, CLIP-L width): L registers it, G skips it
    assert sd35.model.text_processing_engine_l.embeddings.word_embeddings["flat"] is flat
    assert "flat" in sd35.model.text_processing_engine_g.embeddings.skipped_embeddings


def _forge_linear_weights(joint):
    return {n: m.weight.detach().clone() for n, m in joint.named_modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("family", ["forge-sd15", "forge-flux"])
def test_forge_lora_is_merged_when_the_clip_patcher_loads(family):
    import networks
    from backend import memory_management
    from backend.patcher.base import _with_text_model

    webui = _forge(family)
    model = webui.model
    joint = model.forge_objects.clip.cond_stage_model
    lora = standin.add_lora("detail", seed=3)
    before = _forge_linear_weights(joint)
    plain = webui.txt2img(prompt="a cat", steps=2).sampling_records[0].text_cond[0]
    # load_networks only prepares a patched clone of the clip patcher ...
    networks.load_networks(["detail"], [0.5], [0.5])
    patched = model.forge_objects_after_applying_lora.clip
    assert patched is not model.forge_objects_original.clip and patched.cond_stage_model is joint
    assert all(torch.equal(w, before[n]) for n, w in _forge_linear_weights(joint).items())
    q_proj = joint.clip_l.transformer.text_model.encoder.layers[0].self_attn.q_proj
    old_parameter = q_proj.weight
    # ... its weights change when that patcher is loaded
    memory_management.load_model_gpu(patched.patcher)
    assert q_proj.weight is not old_parameter  # a new Parameter, as Forge's LoraLoader sets it
    after = _forge_linear_weights(joint)
    for name, weight in after.items():
        key = _with_text_model(joint, f"{name}.weight")
        up, down = standin.forge_standin.lora_up_down(lora, key, weight.shape)
        assert torch.allclose(weight, before[name] + 0.5 * up @ down, atol=1e-5), name
    if family == "forge-flux":
        assert any(n.startswith("t5xxl.") for n in after)
    networks.load_networks([])
    res = webui.txt2img(prompt="a cat <lora:detail:0.5>", steps=2)
    assert res.p.extra_generation_params["Lora hashes"] == f"detail: {lora.shorthash}"
    with_lora = res.sampling_records[0].text_cond[0]
    key = "crossattn" if isinstance(plain, dict) else None
    assert not torch.allclose(with_lora[key] if key else with_lora, plain[key] if key else plain, atol=1e-4)
    assert all(torch.allclose(w, after[n], atol=1e-6) for n, w in _forge_linear_weights(joint).items())
    # without the LoRA: the original patcher is loaded again and the loader puts the weights back
    again = webui.txt2img(prompt="a cat", steps=2).sampling_records[0].text_cond[0]
    assert all(torch.equal(w, before[n]) for n, w in _forge_linear_weights(joint).items())
    assert torch.allclose(again[key] if key else again, plain[key] if key else plain, atol=1e-6)


def test_forge_count_tokens():
    assert _forge("forge-sd15").count_tokens("a photo of a cat") == (5, 75)
    webui = _forge("forge-flux")
    n = len(standin.forge_standin.t5_tokenizer()(["a photo of a cat"], add_special_tokens=False)["input_ids"][0])
    assert webui.count_tokens("a photo of a cat") == (n, 255)
