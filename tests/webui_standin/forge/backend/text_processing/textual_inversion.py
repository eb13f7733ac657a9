"""Stand-in for ``backend/text_processing/textual_inversion.py``: each text processing engine owns an
``EmbeddingDatabase(tokenizer, expected_shape)`` that reads its embedding folders when the engine is built
(``load_textual_inversion_embeddings``; Forge never reloads them per generation) and registers the
embeddings whose ``shape`` equals ``expected_shape`` (SD1/Flux/SD3-L: CLIP-L width; SDXL: L + G width;
SD3-G: G width), skipping the others. ``fixes`` is set by the engine per chunk column and read (and
cleared) by ``CLIPEmbeddingForTextualInversion``.

Files: ``.safetensors`` / ``.pt`` / ``.bin`` (not the WebUI's embeddings-in-PNG images). ``Embedding``
has Forge's fields (no ``shorthash``/``hash``: Forge writes "TI: name" to the infotext, not hashes)."""

from __future__ import annotations

import os

import torch


class Embedding:
    def __init__(self, vec, name, step=None):
        self.vec = vec
        self.name = name
        self.step = step
        self.shape = None
        self.vectors = 0
        self.sd_checkpoint = None
        self.sd_checkpoint_name = None


class DirWithTextualInversionEmbeddings:
    def __init__(self, path):
        self.path = path
        self.mtime = None

    def has_changed(self):
        if not os.path.isdir(self.path):
            return False
        mtime = os.path.getmtime(self.path)
        return self.mtime is None or mtime > self.mtime

    def update(self):
        if os.path.isdir(self.path):
            self.mtime = os.path.getmtime(self.path)


def create_embedding_from_data(data, name, filename="unknown embedding file", filepath=None):
    if "string_to_param" in data:
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)
        assert len(params) == 1, "embedding file has multiple terms in it"
        vec = next(iter(params.values())).detach().to(dtype=torch.float32)
        shape, vectors = vec.shape[-1], vec.shape[0]
    elif isinstance(data, dict) and "clip_g" in data and "clip_l" in data:
        vec = {k: v.detach().to(dtype=torch.float32) for k, v in data.items()}
        shape = data["clip_g"].shape[-1] + data["clip_l"].shape[-1]
        vectors = data["clip_g"].shape[0]
    elif isinstance(data, dict) and isinstance(next(iter(data.values())), torch.Tensor):
        assert len(data) == 1, "embedding file has multiple terms in it"
        emb = next(iter(data.values()))
        if emb.dim() == 1:
            emb = emb.unsqueeze(0)
        vec = emb.detach().to(dtype=torch.float32)
        shape, vectors = vec.shape[-1], vec.shape[0]
    else:
        raise Exception(f"Couldn't identify {filename} as neither textual inversion embedding nor diffuser concept.")
    embedding = Embedding(vec, name)
    embedding.step = data.get("step", None)
    embedding.sd_checkpoint = data.get("sd_checkpoint", None)
    embedding.sd_checkpoint_name = data.get("sd_checkpoint_name", None)
    embedding.vectors = vectors
    embedding.shape = shape
    if filepath:
        embedding.filename = filepath
    return embedding


class EmbeddingDatabase:
    def __init__(self, tokenizer, expected_shape=-1):
        self.ids_lookup: dict = {}
        self.word_embeddings: dict = {}
        self.embedding_dirs: dict = {}
        self.skipped_embeddings: dict = {}
        self.expected_shape = expected_shape
        self.tokenizer = tokenizer
        self.fixes = []

    def add_embedding_dir(self, path):
        self.embedding_dirs[path] = DirWithTextualInversionEmbeddings(path)

    def clear_embedding_dirs(self):
        self.embedding_dirs.clear()

    def register_embedding(self, embedding):
        return self.register_embedding_by_name(embedding, embedding.name)

    def register_embedding_by_name(self, embedding, name):
        """Index by the first token id of ``name``; candidates sorted longest first. ``None`` unregisters."""
        ids = self.tokenizer([name], truncation=False, add_special_tokens=False)["input_ids"][0]
        first = ids[0]
        candidates = self.ids_lookup.setdefault(first, [])
        if name in self.word_embeddings:
            candidates = [entry for entry in candidates if entry[1].name != name]
        if embedding is not None:
            candidates = candidates + [(ids, embedding)]
        self.ids_lookup[first] = sorted(candidates, key=lambda entry: len(entry[0]), reverse=True)
        if embedding is None:
            self.word_embeddings.pop(name, None)
            if not self.ids_lookup[first]:
                del self.ids_lookup[first]
            return None
        self.word_embeddings[name] = embedding
        return embedding

    def load_from_file(self, path, filename):
        name, ext = os.path.splitext(filename)
        ext = ext.upper()
        if ext == ".SAFETENSORS":
            import safetensors.torch

            data = safetensors.torch.load_file(path, device="cpu")
        elif ext in (".PT", ".BIN"):
            data = torch.load(path, map_location="cpu")
        else:
            return  # images with embedded data are not imitated
        if data is None:
            return
        embedding = create_embedding_from_data(data, name, filename=filename, filepath=path)
        if self.expected_shape == -1 or self.expected_shape == embedding.shape:
            self.register_embedding(embedding)
        else:
            self.skipped_embeddings[name] = embedding

    def load_from_dir(self, embdir):
        if not os.path.isdir(embdir.path):
            return
        for root, _, files in os.walk(embdir.path, followlinks=True):
            for filename in files:
                full = os.path.join(root, filename)
                try:
                    if os.stat(full).st_size == 0:
                        continue
                    self.load_from_file(full, filename)
                except Exception:
                    print(f"Error loading embedding {filename}")

    def load_textual_inversion_embeddings(self):
        self.ids_lookup.clear()
        self.word_embeddings.clear()
        self.skipped_embeddings.clear()
        for embdir in self.embedding_dirs.values():
            self.load_from_dir(embdir)
            embdir.update()

    def find_embedding_at_position(self, tokens, offset):
        candidates = self.ids_lookup.get(tokens[offset], None)
        if candidates is None:
            return None, None
        for ids, embedding in candidates:
            if tokens[offset : offset + len(ids)] == ids:
                return embedding, len(ids)
        return None, None
