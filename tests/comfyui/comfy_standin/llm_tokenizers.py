"""Tiny tokenizers for the stand-in's language models, trained in memory, with the real special token ids of
each family (the ids ComfyUI's code looks for):

- Qwen 2.5 (Qwen-Image): byte-level BPE, `<|endoftext|>` 151643 (padding), `<|im_start|>` 151644,
  `<|im_end|>` 151645, `user` 872 and a line break 198 (ComfyUI finds the chat template's end by these);
- Llama 3 (HiDream): byte-level BPE that starts every text with `<|begin_of_text|>` 128000, `<|eot_id|>` 128009;
- Gemma 2 (Lumina 2): SentencePiece-style (`▁` word starts), pad 0, end 1, start 2, behind the interface of
  ComfyUI's `SPieceTokenizer` (`__call__`, and `.tokenizer` as a SentencePiece processor: `id_to_piece`).
"""

from __future__ import annotations

import json

from tokenizer_families import CORPUS, _metaspace
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

WORDS = [
    "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships of "
    "the objects and background: user assistant system",
    "You are an assistant designed to generate superior images with the superior degree of image-text alignment "
    "based on textual prompts or user prompts. <Prompt Start>",
    "user",
    "system",
    "assistant",
]


def _gpt2_bytes() -> list[str]:
    """GPT-2's byte characters in GPT-2's id order (so a line break, `Ċ`, is id 198)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(rest))]


def byte_level(specials: dict[str, int], fixed: dict[str, int], start: str | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the test corpus, its merged tokens renumbered so that `fixed` tokens and
    `specials` have the given ids; `start` is put before every text."""
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trained.train_from_iterator(CORPUS + WORDS * 20, trainer)
    model = json.loads(trained.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    vocab = {char: index for index, char in enumerate(_gpt2_bytes())}
    taken = set(fixed.values()) | set(specials.values())
    free = (n for n in range(256, 10**6) if n not in taken)
    for token in model["vocab"]:
        if token not in vocab:
            vocab[token] = fixed.get(token, next(free))
    assert all(token in vocab and vocab[token] == index for token, index in fixed.items()), "train more merges"
    vocab.update(specials)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(name, special=True) for name in specials])
    if start is not None:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{start} $A", special_tokens=[(start, specials[start])]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def qwen25() -> PreTrainedTokenizerFast:
    specials = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
    return byte_level(specials, {"user": 872})


def llama3() -> PreTrainedTokenizerFast:
    return byte_level({"<|begin_of_text|>": 128000, "<|eot_id|>": 128009}, {}, start="<|begin_of_text|>")


class _Processor:
    """The part of a SentencePiece processor ComfyUI's callers use."""

    def __init__(self, fast: PreTrainedTokenizerFast, add_bos: bool, add_eos: bool):
        self.fast, self.add_bos, self.add_eos = fast, add_bos, add_eos

    def encode(self, text: str) -> list[int]:
        ids = self.fast(text, add_special_tokens=False)["input_ids"] if text else []
        return [2] * self.add_bos + ids + [1] * self.add_eos

    def unk_id(self) -> int:
        return 3

    def id_to_piece(self, index: int) -> str:
        return self.fast.convert_ids_to_tokens(index)

    def get_piece_size(self) -> int:
        return len(self.fast)


class SPieceTokenizer:
    """ComfyUI's `SPieceTokenizer` over a Gemma-style SentencePiece model (pad 0, end 1, start 2)."""

    def __init__(self, add_bos: bool = False, add_eos: bool = True):
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([_metaspace(pre_tokenizers), pre_tokenizers.Digits(True)])
        tokenizer.decoder = _metaspace(decoders)
        specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
        trainer = trainers.UnigramTrainer(
            vocab_size=400, special_tokens=specials, unk_token="<unk>", show_progress=False
        )
        tokenizer.train_from_iterator(CORPUS + WORDS * 20, trainer)
        fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>")
        self.add_bos, self.add_eos = add_bos, add_eos
        self.tokenizer = _Processor(fast, add_bos, add_eos)

    def get_vocab(self) -> dict[str, int]:
        return {self.tokenizer.id_to_piece(i): i for i in range(self.tokenizer.get_piece_size())}

    def __call__(self, text: str) -> dict:
        return {"input_ids": self.tokenizer.encode(text)}
