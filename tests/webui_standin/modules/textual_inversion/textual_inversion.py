"""Stand-in for ``modules/textual_inversion/textual_inversion.py``: ``Embedding`` and the
``EmbeddingDatabase`` the prompt encoder looks words up in (no training, no files).

The embeddings folder is in memory: ``EmbeddingDatabase.standin_files`` maps a file name to the
data an embedding file would hold (``{"string_to_param": {"*": (vectors, dim)}}`` for SD1/SD2,
``{"clip_l": ..., "clip_g": ...}`` for SDXL). ``load_textual_inversion_embeddings`` registers them
as the WebUI does with a folder: only those whose width fits the loaded model (others are skipped),
sorted by name, reloaded when the folder changed or on ``force_reload`` (model load)."""

from __future__ import annotations

import hashlib

import torch

from modules import devices, shared


class Embedding:
    def __init__(self, vec, name, step=None):
        self.vec = vec  # (vectors, dim), or {"clip_l": (vectors, 768), "clip_g": (vectors, 1280)} for SDXL
        self.name = name
        self.step = step
        self.shape = None  # width: dim, or clip_g + clip_l widths
        self.vectors = 0
        self.cached_checksum = None
        self.sd_checkpoint = None
        self.sd_checkpoint_name = None
        self.optimizer_state_dict = None
        self.filename = None
        self.hash = None
        self.shorthash = None

    def checksum(self):
        if self.cached_checksum is None:
            value = 0
            for v in self.vec.reshape(-1) * 100:
                value = (value * 281 ^ int(v) * 997) & 0xFFFFFFFF
            self.cached_checksum = f"{value & 0xFFFF:04x}"
        return self.cached_checksum

    def set_hash(self, v):
        self.hash = v
        self.shorthash = self.hash[0:12]


def create_embedding_from_data(data, name, filename="unknown embedding file", filepath=None):
    """An ``Embedding`` from an embedding file's data (the formats the WebUI reads)."""
    if "string_to_param" in data:
        params = data["string_to_param"]
        assert len(params) == 1, "embedding file has multiple terms in it"
        vec = next(iter(params.values())).detach().to(devices.device, dtype=torch.float32)
        shape, vectors = vec.shape[-1], vec.shape[0]
    elif isinstance(data, dict) and "clip_g" in data and "clip_l" in data:
        vec = {k: v.detach().to(devices.device, dtype=torch.float32) for k, v in data.items()}
        shape = data["clip_g"].shape[-1] + data["clip_l"].shape[-1]
        vectors = data["clip_g"].shape[0]
    elif isinstance(data, dict) and isinstance(next(iter(data.values())), torch.Tensor):
        assert len(data) == 1, "embedding file has multiple terms in it"
        emb = next(iter(data.values()))
        vec = (emb.unsqueeze(0) if emb.dim() == 1 else emb).detach().to(devices.device, dtype=torch.float32)
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
        embedding.set_hash(_sha256_of(data, name))
    return embedding


def _sha256_of(data, name) -> str:
    """Stands in for the sha256 of the file: a digest of the tensors and the name."""
    digest = hashlib.sha256(name.encode())
    tensors = data.get("string_to_param", data)
    for key in sorted(tensors):
        value = tensors[key]
        if isinstance(value, torch.Tensor):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class EmbeddingDatabase:
    def __init__(self):
        self.ids_lookup = {}  # first token id -> [(ids, Embedding)], longest ids first
        self.word_embeddings = {}
        self.skipped_embeddings = {}
        self.expected_shape = -1
        self.embedding_dirs = {}
        self.previously_displayed_embeddings = ()
        self.standin_files: dict[str, dict] = {}  # the in-memory embeddings folder: file name -> data
        self.standin_files_changed = False

    def register_embedding(self, embedding, model):
        return self.register_embedding_by_name(embedding, model, embedding.name)

    def register_embedding_by_name(self, embedding, model, name):
        """Index ``embedding`` under the token ids of ``name`` (``model.cond_stage_model.tokenize``;
        SDXL: the CLIP-L tokenizer); ``embedding=None`` unregisters ``name``."""
        ids = model.cond_stage_model.tokenize([name])[0]
        first_id = ids[0]
        if first_id not in self.ids_lookup:
            self.ids_lookup[first_id] = []
        if name in self.word_embeddings:
            lookup = [x for x in self.ids_lookup[first_id] if x[1].name != name]
        else:
            lookup = self.ids_lookup[first_id]
        if embedding is not None:
            lookup += [(ids, embedding)]
        self.ids_lookup[first_id] = sorted(lookup, key=lambda x: len(x[0]), reverse=True)
        if embedding is None:
            if name in self.word_embeddings:
                del self.word_embeddings[name]
            if len(self.ids_lookup[first_id]) == 0:
                del self.ids_lookup[first_id]
            return None
        self.word_embeddings[name] = embedding
        return embedding

    def get_expected_shape(self):
        vec = shared.sd_model.cond_stage_model.encode_embedding_init_text(",", 1)
        return vec.shape[1]

    def load_from_data(self, filename, data):
        name = filename.rsplit(".", 1)[0] if "." in filename else filename
        embedding = create_embedding_from_data(data, name, filename=filename, filepath=f"<embeddings>/{filename}")
        if self.expected_shape == -1 or self.expected_shape == embedding.shape:
            self.register_embedding(embedding, shared.sd_model)
        else:
            self.skipped_embeddings[name] = embedding

    def load_textual_inversion_embeddings(self, force_reload=False):
        if not force_reload and not self.standin_files_changed:
            return
        self.ids_lookup.clear()
        self.word_embeddings.clear()
        self.skipped_embeddings.clear()
        self.expected_shape = self.get_expected_shape()
        for filename, data in self.standin_files.items():
            self.load_from_data(filename, data)
        self.standin_files_changed = False
        ordered = {e.name: e for e in sorted(self.word_embeddings.values(), key=lambda e: e.name.lower())}
        self.word_embeddings.clear()
        self.word_embeddings.update(ordered)

    def find_embedding_at_position(self, tokens, offset):
        """``(embedding, number of prompt tokens its name takes)`` of the longest registered name
        whose ids start at ``tokens[offset]``, else ``(None, None)``."""
        possible_matches = self.ids_lookup.get(tokens[offset], None)
        if possible_matches is None:
            return None, None
        for ids, embedding in possible_matches:
            if tokens[offset : offset + len(ids)] == ids:
                return embedding, len(ids)
        return None, None

    def standin_clear(self):
        """Empty the folder and the database (``standin.reset``)."""
        self.__init__()
