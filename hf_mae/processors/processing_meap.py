"""MEAP's text processor: a causal LM's tokenizer with MEAP's ``[MASK]``, texts -> ``input_ids`` / ``attention_mask``.

MEAP's mask is drawn per batch by the model (``MEAPForCausalLM``), so the processor only tokenises: it adds the
tokenizer's BOS (where it has one), truncates to ``max_length`` with a warning and pads to the longest text.

The ``meap-tiny`` preset's tokenizer is :func:`byte_level_tokenizer`, built in code (hf-mae's choice): 3 specials
(``<pad>`` 0, ``<s>`` 1, ``</s>`` 2) and the 256 byte symbols (ids 3..258), no merges, so any text is tokenisable,
nothing is trained or downloaded, and it lacks ``[MASK]`` (MEAP adds it at id 259). The real MiniLM WordPiece at
hand is a BERT tokenizer (uncased, [CLS]/[SEP], already holds [MASK], 30,522 ids), a poor fit for a causal LM.

Remote-code rule: only the standard library, transformers and tokenizers (a transformers dependency).
"""

from __future__ import annotations

import json
import os
import warnings

from transformers import AutoTokenizer, PreTrainedTokenizerFast

PROCESSOR_FILE = "meap_processor.json"
BYTE_SPECIALS = ("<pad>", "<s>", "</s>")


def byte_symbols() -> dict[int, str]:
    """Byte -> the printable symbol the byte-level pre-tokenizer writes for it (GPT-2's table: printable Latin-1
    bytes stand for themselves, the other 68 take the code points from 256 up, in byte order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    others = [byte for byte in range(256) if byte not in printable]
    table = {byte: chr(byte) for byte in printable}
    table.update({byte: chr(256 + index) for index, byte in enumerate(others)})
    return dict(sorted(table.items()))


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """hf-mae's byte-level tokenizer (259 ids: ``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, then byte ``b`` at ``3 + b``; no
    merges), which prefixes ``<s>``. Deterministic: the same ids on every machine."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {token: index for index, token in enumerate(BYTE_SPECIALS)}
    vocab.update({symbol: len(BYTE_SPECIALS) + byte for byte, symbol in byte_symbols().items()})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                        special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   model_max_length=1 << 30)


def add_mask_token(tokenizer, mask_token: str = "[MASK]") -> int:
    """The processor's side of MEAP's transform (the model file's ``add_mask_token`` does the same): a tokenizer
    without a mask token gains ``mask_token``; returns how many ids were added."""
    added = 0
    if tokenizer.mask_token is None:
        if mask_token in tokenizer.get_vocab():
            tokenizer.mask_token = mask_token
        else:
            added = tokenizer.add_special_tokens({"mask_token": mask_token})
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return added


class MEAPProcessor:
    """texts (a str or a list of str) -> ``{"input_ids", "attention_mask"}`` (batch, L) long tensors.

    tokenizer: a transformers tokenizer; it gains ``[MASK]`` here when it has no mask token.
    max_length: texts longer than this many tokens are cut, with a warning.
    """

    def __init__(self, tokenizer, max_length: int = 2048, mask_token: str = "[MASK]"):
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        add_mask_token(tokenizer, mask_token)

    @classmethod
    def from_model_config(cls, config, **kwargs):
        name = config.tokenizer_name_or_path or config.lm_name_or_path
        tokenizer = byte_level_tokenizer() if name is None else AutoTokenizer.from_pretrained(name)
        processor = cls(tokenizer, max_length=kwargs.pop("max_length", config.max_length),
                        mask_token=config.mask_token, **kwargs)
        if config.mask_token_id is not None and tokenizer.mask_token_id != config.mask_token_id:
            raise ValueError(f"the tokenizer {name or 'byte_level_tokenizer()'} puts the mask token at id "
                             f"{tokenizer.mask_token_id}, the config expects mask_token_id {config.mask_token_id}")
        return processor

    @property
    def mask_token_id(self) -> int:
        return self.tokenizer.mask_token_id

    def __call__(self, texts, return_tensors: str = "pt", **kwargs):
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)) or not all(isinstance(text, str) for text in texts):
            raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
        empty = [index for index, text in enumerate(texts) if not text]
        if empty:
            raise ValueError(f"texts {empty[:5]} are empty strings; a causal LM needs at least one token per text")
        encoded = self.tokenizer(list(texts), truncation=False, add_special_tokens=True)
        longest = max(len(ids) for ids in encoded["input_ids"])
        if longest > self.max_length:
            cut = sum(len(ids) > self.max_length for ids in encoded["input_ids"])
            warnings.warn(f"{cut} of {len(texts)} texts are longer than max_length={self.max_length} tokens (the "
                          f"longest {longest}); they are truncated", stacklevel=2)
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding="longest",
                              return_tensors=return_tensors, **kwargs)

    def save_pretrained(self, save_directory, **kwargs):
        os.makedirs(save_directory, exist_ok=True)
        self.tokenizer.save_pretrained(save_directory)
        with open(os.path.join(save_directory, PROCESSOR_FILE), "w") as stream:
            json.dump({"processor_class": type(self).__name__, "max_length": self.max_length}, stream, indent=2)
        return [os.path.join(save_directory, PROCESSOR_FILE)]

    @classmethod
    def from_pretrained(cls, directory, **kwargs):
        with open(os.path.join(directory, PROCESSOR_FILE)) as stream:
            settings = json.load(stream)
        return cls(AutoTokenizer.from_pretrained(directory), max_length=kwargs.get("max_length",
                                                                                   settings["max_length"]))
