"""A character-level tokenizer built from the task's own text, for tiny models without a vocabulary."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}


def build(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """One token per distinct character (sorted, so the same texts give the same ids).

    A model may have more embedding rows than this vocabulary (``arch.vocab_size``, a floor). Decoding an id
    past the vocabulary never raises: the tokenizer has no token for it and leaves it out of the text, as it
    does for special tokens (tests/test_model_matrix.py pins this, through a save and reload too).
    """
    chars = sorted(set("".join(texts)))
    vocab = {tok: i for i, tok in enumerate(SPECIALS.values())}
    vocab.update({c: len(SPECIALS) + i for i, c in enumerate(chars)})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIALS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, padding_side="left", **SPECIALS)
