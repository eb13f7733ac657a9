"""ComfyUI's CLIP tokenizer and text-encoder wrapper (`comfy.sd1_clip`), as it behaves (see the README)."""

from __future__ import annotations

import logging
import numbers
import os
import re

import torch

import comfy.clip_model
import comfy.ops
from comfy import model_management

ESCAPED_CLOSE, ESCAPED_OPEN = "\0\1", "\0\2"

# Tiny sizes for the stand-in's encoders (ComfyUI reads the real ones from JSON files).
CLIP_L_CONFIG = {
    "hidden_size": 32,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_hidden_layers": 3,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "eos_token_id": 49407,
    "vocab_size": 49408,
}
TOKENIZERS = {}  # name -> a function building the transformers tokenizer (set by comfy_standin_builders)


def escape_important(text):
    return text.replace("\\)", ESCAPED_CLOSE).replace("\\(", ESCAPED_OPEN)


def unescape_important(text):
    return text.replace(ESCAPED_CLOSE, ")").replace(ESCAPED_OPEN, "(")


def _split_groups(text):
    """Top-level runs: text outside parentheses, and `(...)` groups (nesting counted; a `)` that closes nothing
    lowers the count below zero, where `(` and `)` are plain text until it is back at zero)."""
    runs, current, depth = [], "", 0
    for char in text:
        if char == "(":
            if depth == 0 and current:
                runs.append(current)
                current = ""
            current += char
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                runs.append(current + ")")
                current = ""
            else:
                current += char
        else:
            current += char
    if current:
        runs.append(current)
    return runs


def token_weights(text, weight):
    """`(text, weight)` pieces: `(a)` multiplies by 1.1, `(a:1.5)` sets 1.5 (when the part after the last
    colon, not at the start, reads as a number)."""
    pieces = []
    for run in _split_groups(text):
        if len(run) >= 2 and run.startswith("(") and run.endswith(")"):
            inner = run[1:-1]
            inner_weight = weight * 1.1
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    inner_weight = float(inner[colon + 1 :])
                    inner = inner[:colon]
                except ValueError:
                    pass
            pieces += token_weights(inner, inner_weight)
        else:
            pieces.append((run, weight))
    return pieces


EMBEDDINGS = {}  # (directory, name) -> {key: tensor}: what the stand-in's embedding files hold


def load_embed(name, directory, size, key=None):
    """An embedding's vectors `(n, size)`, or None where no file of that name is in the folder."""
    if directory is None:
        return None
    for candidate in (name, os.path.splitext(name)[0]):
        found = EMBEDDINGS.get((directory, candidate))
        if found is not None:
            vectors = found.get(key) if key in found else next(iter(found.values()))
            return vectors
    return None


class SDTokenizer:
    def __init__(
        self,
        tokenizer_path=None,
        max_length=77,
        pad_with_end=True,
        embedding_directory=None,
        embedding_size=768,
        embedding_key="clip_l",
        tokenizer_class="clip",
        has_start_token=True,
        has_end_token=True,
        pad_to_max_length=True,
        min_length=None,
        pad_token=None,
        end_token=None,
        min_padding=None,
        tokenizer_data={},
        tokenizer_args={},
    ):
        self.tokenizer = TOKENIZERS[tokenizer_class](**tokenizer_args)
        self.max_length = tokenizer_data.get(f"{embedding_key}_max_length", max_length)
        self.min_length = tokenizer_data.get(f"{embedding_key}_min_length", min_length)
        self.min_padding = min_padding
        empty = self.tokenizer("")["input_ids"]
        self.tokenizer_adds_end_token = has_end_token
        self.tokens_start = 1 if has_start_token else 0
        self.start_token = empty[0] if has_start_token else None
        if end_token is not None:
            self.end_token = end_token
        elif has_end_token:
            self.end_token = empty[1] if has_start_token else empty[0]
        else:
            self.end_token = None
        self.pad_token = pad_token if pad_token is not None else (self.end_token if pad_with_end else 0)
        self.pad_with_end = pad_with_end
        self.pad_to_max_length = pad_to_max_length
        self.embedding_directory = embedding_directory
        self.max_word_length = 8
        self.embedding_identifier = "embedding:"
        self.embedding_size = embedding_size
        self.embedding_key = embedding_key

    def _embedding(self, text):
        """`(vectors or None, the text after the name)` for the text after `embedding:`."""
        words = text.split()
        name, rest = words[0], " ".join(words[1:])
        vectors = load_embed(name, self.embedding_directory, self.embedding_size, self.embedding_key)
        if vectors is None and name.rstrip(",") != name:
            stripped = name.rstrip(",")
            vectors = load_embed(stripped, self.embedding_directory, self.embedding_size, self.embedding_key)
            return vectors, f"{name[len(stripped) :]} {rest}"
        return vectors, rest

    def tokenize_with_weights(self, text, return_word_ids=False, tokenizer_options={}, **kwargs):
        min_length = tokenizer_options.get(f"{self.embedding_key}_min_length", self.min_length)
        min_padding = tokenizer_options.get(f"{self.embedding_key}_min_padding", self.min_padding)
        text = escape_important(text)
        pieces = [(text, 1.0)] if kwargs.get("disable_weights", False) else token_weights(text, 1.0)

        groups = []  # the token groups, each [(token, weight)], in order
        for piece, weight in pieces:
            piece = unescape_important(piece)
            parts = re.split(" embedding:|\nembedding:", piece)
            words = [parts[0]] + ["embedding:" + part for part in parts[1:]]
            for word in (w for w in words if w):
                if word.startswith(self.embedding_identifier) and self.embedding_directory is not None:
                    vectors, rest = self._embedding(word[len(self.embedding_identifier) :].strip("\n"))
                    if vectors is not None:
                        vectors = vectors if vectors.ndim > 1 else vectors[None]
                        groups.append([(vector, weight) for vector in vectors])
                    if not rest:
                        continue
                    word = rest
                ids = self.tokenizer(word)["input_ids"]
                ids = ids[self.tokens_start : -1 if self.tokenizer_adds_end_token else None]
                groups.append([(token, weight) for token in ids])

        chunks, chunk = [], []
        end = 1 if self.end_token is not None else 0

        def new_chunk():
            chunk = [(self.start_token, 1.0, 0)] if self.start_token is not None else []
            chunks.append(chunk)
            return chunk

        chunk = new_chunk()
        for number, group in enumerate(groups, start=1):
            large = len(group) >= self.max_word_length
            while group:
                room = self.max_length - len(chunk) - end
                if len(group) <= room:
                    chunk += [(token, weight, number) for token, weight in group]
                    group = []
                    continue
                if large:  # a long word is split where the chunk ends
                    chunk += [(token, weight, number) for token, weight in group[:room]]
                    group = group[room:]
                    if self.end_token is not None:
                        chunk.append((self.end_token, 1.0, 0))
                else:  # a short one moves to the next chunk whole
                    if self.end_token is not None:
                        chunk.append((self.end_token, 1.0, 0))
                    if self.pad_to_max_length:
                        chunk += [(self.pad_token, 1.0, 0)] * room
                chunk = new_chunk()
        if self.end_token is not None:
            chunk.append((self.end_token, 1.0, 0))
        if min_padding is not None:
            chunk += [(self.pad_token, 1.0, 0)] * min_padding
        if self.pad_to_max_length and len(chunk) < self.max_length:
            chunk += [(self.pad_token, 1.0, 0)] * (self.max_length - len(chunk))
        if min_length is not None and len(chunk) < min_length:
            chunk += [(self.pad_token, 1.0, 0)] * (min_length - len(chunk))
        if not return_word_ids:
            chunks = [[(token, weight) for token, weight, _ in chunk] for chunk in chunks]
        return chunks


class SD1Tokenizer:
    def __init__(self, embedding_directory=None, tokenizer_data={}, clip_name="l", tokenizer=SDTokenizer, name=None):
        self.clip_name = name if name is not None else clip_name
        self.clip = name if name is not None else f"clip_{clip_name}"
        setattr(self, self.clip, tokenizer(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data))

    def tokenize_with_weights(self, text, return_word_ids=False, **kwargs):
        return {self.clip_name: getattr(self, self.clip).tokenize_with_weights(text, return_word_ids, **kwargs)}


def gen_empty_tokens(special_tokens, length):
    tokens = [special_tokens[name] for name in ("start", "end") if special_tokens.get(name) is not None]
    return tokens + [special_tokens["pad"]] * (length - len(tokens))


class ClipTokenWeightEncoder:
    def encode_token_weights(self, token_weight_pairs):
        sections = [[entry[0] for entry in section] for section in token_weight_pairs]
        weighted = any(entry[1] != 1.0 for section in token_weight_pairs for entry in section)
        longest = max((len(section) for section in sections), default=0)
        batch = list(sections)
        if weighted or not sections:  # a model may have its own empty prompt (PixArt / Chroma: padding only)
            batch.append(getattr(self, "gen_empty_tokens", gen_empty_tokens)(self.special_tokens, longest))
        out = self.encode(batch)
        z, pooled = out[0], out[1]
        first_pooled = pooled[0:1].to(model_management.intermediate_device()) if pooled is not None else None
        rows = []
        for k, section in enumerate(token_weight_pairs):
            chunk = z[k : k + 1]
            if weighted:  # along dimension 1: the rows, or (a model giving every layer) the layers
                empty = z[-1]
                for j in range(len(chunk[0])):
                    if section[j][1] != 1.0:
                        chunk[0][j] = (chunk[0][j] - empty[j]) * section[j][1] + empty[j]
            rows.append(chunk)
        cond = torch.cat(rows, dim=-2) if rows else z[-1:]
        result = (cond.to(model_management.intermediate_device()), first_pooled)
        if len(out) > 2:
            extra = dict(out[2])
            if "attention_mask" in extra:
                extra["attention_mask"] = extra["attention_mask"][: len(sections)].flatten()[None]
            result += (extra,)
        return result


class SDClipModel(torch.nn.Module, ClipTokenWeightEncoder):
    def __init__(
        self,
        device="cpu",
        max_length=77,
        freeze=True,
        layer="last",
        layer_idx=None,
        textmodel_json_config=None,
        dtype=None,
        model_class=comfy.clip_model.CLIPTextModel,
        special_tokens={"start": 49406, "end": 49407, "pad": 49407},
        layer_norm_hidden_state=True,
        enable_attention_masks=False,
        zero_out_masked=False,
        return_projected_pooled=True,
        return_attention_masks=False,
        model_options={},
    ):
        super().__init__()
        config = dict(CLIP_L_CONFIG if textmodel_json_config is None else textmodel_json_config)
        self.transformer = model_class(config, dtype, device, comfy.ops.manual_cast)
        self.num_layers = self.transformer.num_layers
        self.max_length = max_length
        self.special_tokens = special_tokens
        self.layer, self.layer_idx = layer, None
        self.layer_norm_hidden_state = layer_norm_hidden_state
        self.enable_attention_masks = enable_attention_masks
        self.zero_out_masked = zero_out_masked
        self.return_projected_pooled = return_projected_pooled
        self.return_attention_masks = return_attention_masks
        if layer == "hidden":
            self.set_clip_options({"layer": layer_idx})
        self.options_default = (self.layer, self.layer_idx, self.return_projected_pooled)
        for parameter in self.parameters():
            parameter.requires_grad = False
        self.eval()

    def set_clip_options(self, options):
        index = options.get("layer", self.layer_idx)
        self.return_projected_pooled = options.get("projected_pooled", self.return_projected_pooled)
        if self.layer == "all":
            return
        if index is None or abs(index) > self.num_layers:
            self.layer = "last"
        else:
            self.layer, self.layer_idx = "hidden", index

    def reset_clip_options(self):
        self.layer, self.layer_idx, self.return_projected_pooled = self.options_default

    def process_tokens(self, tokens, device):
        """Embeddings `(batch, seq, width)` in float32 (vectors inserted where a token is a tensor), the
        attention masks (1 up to and with the first end token) and the attended counts."""
        stop = self.special_tokens.get("end", self.special_tokens.get("pad"))
        embedder = self.transformer.get_input_embeddings()
        rows, masks, counts = [], [], []
        for sequence in tokens:
            pieces, mask, ended, dropped = [], [], False, 0
            for token in sequence:
                if isinstance(token, numbers.Integral):
                    ids = torch.tensor([[int(token)]], device=device)
                    pieces.append(embedder(ids, out_dtype=torch.float32)[0])
                    mask.append(0 if ended else 1)
                    if not ended and int(token) == stop:
                        ended = True
                        if self.special_tokens.get("end") is None:
                            mask[-1] = 0
                else:
                    vector = token.reshape(-1, token.shape[-1]).to(device=device, dtype=torch.float32)
                    if vector.shape[-1] != embedder.weight.shape[-1]:  # dropped; padding made up at the end
                        logging.warning(
                            "WARNING: shape mismatch when trying to apply embedding, embedding will be ignored"
                        )
                        dropped += vector.shape[0]
                        continue
                    pieces.append(vector)
                    mask += [1] * vector.shape[0]
            if dropped:
                pad = torch.tensor([[self.special_tokens["pad"]] * dropped], device=device)
                pieces.append(embedder(pad, out_dtype=torch.float32)[0])
                mask += [0] * dropped
            rows.append(torch.cat(pieces))
            masks.append(mask)
            counts.append(sum(mask))
        return torch.stack(rows), torch.tensor(masks, device=device), counts

    def forward(self, tokens):
        device = self.transformer.get_input_embeddings().weight.device
        embeds, mask, counts = self.process_tokens(tokens, device)
        outputs = self.transformer(
            None,
            mask if self.enable_attention_masks else None,
            embeds=embeds,
            num_tokens=counts,
            intermediate_output={"hidden": self.layer_idx, "all": "all"}.get(self.layer),
            final_layer_norm_intermediate=self.layer_norm_hidden_state,
            dtype=torch.float32,
        )
        z = (outputs[0] if self.layer == "last" else outputs[1]).float()
        if self.zero_out_masked:
            z = z * mask[..., None].float()
        pooled = None
        if len(outputs) >= 3:
            if not self.return_projected_pooled and len(outputs) >= 4:
                pooled = outputs[3].float()
            elif outputs[2] is not None:
                pooled = outputs[2].float()
        if self.return_attention_masks:
            return z, pooled, {"attention_mask": mask}
        return z, pooled

    def encode(self, tokens):
        return self(tokens)


class SD1CheckpointClipModel(SDClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}):
        super().__init__(device=device, return_projected_pooled=False, dtype=dtype, model_options=model_options)


class SD1ClipModel(torch.nn.Module):
    def __init__(
        self,
        device="cpu",
        dtype=None,
        model_options={},
        clip_name="l",
        clip_model=SD1CheckpointClipModel,
        name=None,
        **kwargs,
    ):  # noqa: E501
        super().__init__()
        self.clip_name = name if name is not None else clip_name
        self.clip = name if name is not None else f"clip_{clip_name}"
        setattr(self, self.clip, clip_model(device=device, dtype=dtype, model_options=model_options, **kwargs))
        self.dtypes = {dtype} if dtype is not None else set()

    def set_clip_options(self, options):
        getattr(self, self.clip).set_clip_options(options)

    def reset_clip_options(self):
        getattr(self, self.clip).reset_clip_options()

    def encode_token_weights(self, token_weight_pairs):
        return getattr(self, self.clip).encode_token_weights(token_weight_pairs[self.clip_name])
