"""Tiny tokenizers of every family flowcore meets, with their real quirks, trained in memory with `tokenizers`.

- byte-level BPE (GPT-2, Llama 3, SmolLM, Qwen): a leading space is part of the token (`"Ġbats"`), so
  `" bats"` and `"bats"` are different tokens;
- SentencePiece (T5, Llama 2, Gemma): a word-start marker `▁` and a dummy prefix before the first word, and
  digits split one by one;
- WordPiece (BERT): lower-cased, continuations marked `##`.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

CORPUS = [
    "a crosswalk next to a bus station with a standing zebra",
    "a baseball game with bats flying over the stadium at night",
    "a red car with bats, a wooden chair and 85mm lens, 1girl, 2024",
    "San Francisco's Golden Gate Bridge in the fog, photo of a cat",
] * 20


def byte_level_bpe() -> PreTrainedTokenizerFast:
    """GPT-2-style: byte-level pre-tokenization without a prefix space, BOS = EOS = <|endoftext|>."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def _metaspace(kind):
    """A `▁` dummy-prefix Metaspace step; tokenizers before 0.14 (the A1111 WebUI's) spell `prepend_scheme`
    as `add_prefix_space`."""
    try:
        return kind.Metaspace(replacement="▁", prepend_scheme="always")
    except TypeError:
        return kind.Metaspace(replacement="▁", add_prefix_space=True)


def sentencepiece(start_token: bool) -> PreTrainedTokenizerFast:
    """T5-style (`start_token=False`: no BOS, EOS `</s>`, pad `<pad>`) or Llama-2-style (BOS `<s>`, EOS `</s>`):
    `▁` word starts with a dummy prefix, digits split one by one."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([_metaspace(pre_tokenizers), pre_tokenizers.Digits(True)])
    tokenizer.decoder = _metaspace(decoders)
    specials = ["<pad>", "</s>", "<unk>", "<s>"]
    trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token="<unk>")
    tokenizer.train_from_iterator(CORPUS, trainer)
    names = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    if start_token:
        names["bos_token"] = "<s>"
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **names)


def wordpiece() -> PreTrainedTokenizerFast:
    """BERT-style: lower-cased, `##` continuations, [CLS] ... [SEP]."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tokenizer.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
