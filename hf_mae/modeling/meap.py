"""MEAP: Mask-Enhanced Autoregressive Prediction (Zhuang et al., ICML 2025), arXiv:2502.07490.

MEAP changes no architecture: it is a training transform for any decoder-only causal LM.
1. The tokenizer gains a ``[MASK]`` token (a tokenizer that has a mask token keeps it) and the LM's input
   embeddings (and its output layer) grow by the one row it needs (:func:`add_mask_token`, :func:`meap_transform`).
2. Pre-training (``mode="pretrain"``): in every training batch ``max(1, int(L * mask_ratio))`` input positions,
   drawn uniformly from ``[0, L - 1)`` and **the same for every sequence of the batch**, are replaced by ``[MASK]``;
   the positions come from a generator seeded by the optimiser step (``masking.step_seeded_positions``). The
   next-token targets stay the *original* tokens, and the loss is the plain next-token cross-entropy over every
   position: nothing else changes (causal attention, no extra head).
3. Fine-tuning (``mode="sft"``): :func:`meap_sft_examples` turns a (prompt, answer) pair into the usual example
   (labels = -100 on the prompt, next-token targets on the answer and EOS) and, when the answer has more than
   ``sft_answer_threshold`` (50) tokens, a masked copy: ``max(1, int(A * mask_ratio))`` answer positions replaced
   by ``[MASK]``, labels = the original token at the masked positions only (-100 elsewhere), which transformers'
   shifted loss predicts from the position before. The model then trains on both with its ordinary loss.

The wrapped LM is any ``AutoModelForCausalLM``: built from ``lm_config`` (a config dict, randomly initialised from
``lm_seed``), loaded from ``lm_name_or_path``, or passed as an instance (``MEAPForCausalLM(config, lm=...)``). It is
the submodule ``lm`` and is trained; :meth:`MEAPForCausalLM.save_lm` writes it (and the tokenizer with its
``[MASK]``) as a plain transformers checkpoint that ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer``
load without hf-mae.

Departures from the paper / the official code (``scitix/MEAP``):
- the official pre-training feeds ``block_size`` tokens and predicts the next ``block_size``; hf-mae follows
  transformers (``L`` tokens in, the ``L - 1`` shifted targets) and draws from ``[0, L - 1)`` of the ``L`` given
  positions (the last one, a target only, is never masked);
- positions come from ``torch.Generator(mask_seed + step)`` (``step`` modulo ``mask_seed_cycle`` when set: the
  official cycles ``50 + step % 51`` through Python's ``random``), so the exact positions differ from the official
  ones for the same step;
- the official SFT truncates the labels of the plain example independently of its input (the last label can then be
  an answer token where the input has EOS); hf-mae cuts both the same way;
- the paper describes concatenating the plain and masked SFT copies; the official code (and hf-mae) emits them as
  two examples.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedConfig, PreTrainedModel
from transformers import PreTrainedTokenizerFast
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.utils import ModelOutput

from .base import MaskedModelPreTrainedModel, check_choice, check_int, check_rate
from .masking import step_seeded_positions
from .teachers import check_teacher_fields
from .text import BackboneSizes, TextProcessor, check_token_inputs, no_warm_start, warm_start_enabled

MODES = ("pretrain", "sft")
IGNORE_INDEX = -100
# config keys of a saved LM config that describe the checkpoint, not the architecture
_NOT_ARCHITECTURE = ("_name_or_path", "architectures", "transformers_version", "dtype", "torch_dtype")


class MEAPConfig(BackboneSizes, PreTrainedConfig):  # the LM's sizes read through
    r"""Configuration of a MEAP model: a causal LM and how MEAP masks its inputs. Defaults are the paper's
    pre-training (``mask_ratio`` 0.1).

    lm_name_or_path: the causal LM (a Hub id or a folder): its config.json gives the architecture when
        ``lm_config`` is None, and its weights warm-start a freshly built model (never ``from_pretrained`` of a
        saved MEAP model, whose weights are its own), as the text foundation's ``encoder_name_or_path``.
    lm_config: the LM's architecture as a config dict (with ``model_type``, e.g. ``"llama"``); None with a name:
        read from the name's config.json. Once a model is built it holds the LM's full config with the vocabulary
        grown for ``[MASK]``. Without a name the LM is randomly initialised.
    lm_seed: seed of that random initialisation (hf-mae's choice: the global RNG is left alone).
    tokenizer_name_or_path: the tokenizer (None: ``lm_name_or_path``; with neither, the processor builds hf-mae's
        byte-level tokenizer, the one of the ``meap-tiny`` preset).
    mask_ratio: share of input positions replaced by ``[MASK]`` (0.1, the paper's; 0.05 / 0.15 / 0.2 in ablations);
        in SFT mode the share of answer positions of the masked copy.
    mode: ``"pretrain"`` (the model masks every training batch itself, targets unmasked) or ``"sft"`` (no masking
        in the forward: :func:`meap_sft_examples` prepares the masked copies and their labels).
    mask_token: the token added to a tokenizer that has no mask token (``"[MASK]"``, the official one).
    mask_token_id: its id, set when the model is first built from a tokenizer (the preset's tokenizer fixes it).
    mask_seed, mask_seed_cycle: the positions of step ``s`` come from ``torch.Generator(mask_seed + s)``, or with a
        cycle from ``mask_seed + s % mask_seed_cycle`` (the official scripts: seed 50, cycle 51, i.e. 51 distinct
        patterns); hf-mae's default is a fresh seed every step (cycle None).
    sft_answer_threshold: SFT makes a masked copy of an answer longer than this many tokens (50, the official).
    max_length: the processor truncates texts to this many tokens, with a warning (hf-mae's choice: 2048; the
        paper's pre-training block is 4096).
    """

    model_type = "meap"

    lm_name_or_path: str | None = None
    lm_config: dict | None = None
    lm_seed: int = 0
    tokenizer_name_or_path: str | None = None
    mask_ratio: float = 0.1
    mode: str = "pretrain"
    mask_token: str = "[MASK]"
    mask_token_id: int | None = None
    mask_seed: int = 0
    mask_seed_cycle: int | None = None
    sft_answer_threshold: int = 50
    max_length: int = 2048

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_teacher_fields(self, prefix="lm")
        for name in ("tokenizer_name_or_path",):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and value):
                raise ValueError(f"{name} must be a Hub id or folder (a non-empty str) or None, got {value!r}")
        check_rate("mask_ratio", self.mask_ratio)
        check_choice("mode", self.mode, MODES)
        if not (isinstance(self.mask_token, str) and self.mask_token):
            raise ValueError(f"mask_token must be a non-empty str, got {self.mask_token!r}")
        if self.mask_token_id is not None:
            check_int("mask_token_id", self.mask_token_id, minimum=0)
        if isinstance(self.mask_seed, bool) or not isinstance(self.mask_seed, int):
            raise ValueError(f"mask_seed must be an int, got {self.mask_seed!r}")
        if self.mask_seed_cycle is not None:
            check_int("mask_seed_cycle", self.mask_seed_cycle)
        check_int("sft_answer_threshold", self.sft_answer_threshold, minimum=0)
        check_int("max_length", self.max_length, minimum=2)
        if self.lm_config is None and self.lm_name_or_path is not None:
            # the architecture only (config.json), never the weights: a fresh build reads those (warm start)
            self.lm_config = lm_config_dict(AutoConfig.from_pretrained(self.lm_name_or_path))

    def backbone_config(self) -> PreTrainedConfig:
        """The transformers config of the wrapped LM."""
        if self.lm_config is None:
            raise ValueError("MEAPConfig needs a causal LM: set lm_name_or_path (a Hub id or folder) or lm_config (a "
                             "config dict with 'model_type'), or pass the model as MEAPForCausalLM(config, lm=...)")
        settings = dict(self.lm_config)
        return AutoConfig.for_model(settings.pop("model_type"), **settings)


    def step_seed(self, step: int) -> int:
        """The seed of the mask positions of optimiser step ``step``."""
        return self.mask_seed + (step % self.mask_seed_cycle if self.mask_seed_cycle else step)


# ---------------------------------------------------------------------------------------------------------------
# The transform: [MASK] in the tokenizer, one more embedding row in the LM


def add_mask_token(tokenizer, mask_token: str = "[MASK]") -> int:
    """Gives ``tokenizer`` a mask token unless it has one; returns how many tokens were added (0 or 1).

    A tokenizer with a ``mask_token`` keeps it (BERT's ``[MASK]``, RoBERTa's ``<mask>``); one whose vocabulary
    already holds ``mask_token`` gets it as its mask token without a new id; otherwise ``mask_token`` is added as a
    special token. Also sets the padding token to EOS where there is none (as the official code), so batches pad.
    """
    if not (isinstance(mask_token, str) and mask_token):
        raise ValueError(f"mask_token must be a non-empty str, got {mask_token!r}")
    added = 0
    if tokenizer.mask_token is None:
        if mask_token in tokenizer.get_vocab():
            tokenizer.mask_token = mask_token
        else:
            added = tokenizer.add_special_tokens({"mask_token": mask_token})
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return added


def meap_transform(lm: PreTrainedModel, tokenizer, mask_token: str = "[MASK]") -> int:
    """MEAP's change to a causal LM and its tokenizer, in place: :func:`add_mask_token`, then the input embeddings
    (and a separate output layer) grow to hold the mask id when it is past the last row (one row for a tokenizer as
    large as the embedding; none for a padded vocabulary that already has room). Returns the mask token id."""
    if not isinstance(lm, PreTrainedModel):
        raise TypeError(f"lm must be a transformers PreTrainedModel (a causal LM), got {type(lm).__name__}")
    add_mask_token(tokenizer, mask_token)
    mask_id = tokenizer.mask_token_id
    rows = lm.get_input_embeddings().weight.shape[0]
    if mask_id >= rows:
        lm.resize_token_embeddings(mask_id + 1, mean_resizing=False)  # the new row gets the LM's own init
    return mask_id


def lm_config_dict(lm) -> dict:
    """The architecture of ``lm`` (a model or its config) as a config dict (with ``model_type``) that
    :func:`build_causal_lm` rebuilds."""
    config = lm.config if isinstance(lm, PreTrainedModel) else lm
    settings = config.to_dict()
    for key in _NOT_ARCHITECTURE:
        settings.pop(key, None)
    settings["model_type"] = config.model_type
    return settings


def build_causal_lm(config: MEAPConfig, **kwargs) -> PreTrainedModel:
    """The randomly initialised LM of ``config.lm_config`` (from ``lm_seed``, the global RNG left alone)."""
    lm_config = config.backbone_config()
    implementation = getattr(config, "_attn_implementation", None)  # the wrapper's backend (eager, sdpa, flex, ...)
    if implementation is not None and "attn_implementation" not in kwargs:
        kwargs["attn_implementation"] = implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.lm_seed)
        return AutoModelForCausalLM.from_config(lm_config, **kwargs)


def load_lm_weights(lm: PreTrainedModel, name_or_path: str) -> dict:
    """Copies ``AutoModelForCausalLM.from_pretrained(name_or_path)``'s weights (float32) into ``lm``; a source with
    fewer embedding rows (``lm`` already grown for ``[MASK]``) is grown first, its new row left as ``lm`` had it.
    Returns ``{"missing_keys", "unexpected_keys"}`` of the copy."""
    source = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32)
    rows = lm.get_input_embeddings().weight.shape[0]
    state = source.state_dict()
    own = lm.state_dict()
    for key, value in state.items():
        if key in own and value.dim() == 2 and value.shape[0] < own[key].shape[0] == rows:
            grown = own[key].detach().clone()
            grown[: value.shape[0]] = value
            state[key] = grown
    result = lm.load_state_dict(state, strict=False)
    return {"missing_keys": list(result.missing_keys), "unexpected_keys": list(result.unexpected_keys)}


def load_tokenizer(config: MEAPConfig):
    """The tokenizer ``tokenizer_name_or_path`` (or ``lm_name_or_path``) names; with neither, hf-mae's
    :func:`byte_level_tokenizer`."""
    name = config.tokenizer_name_or_path or config.lm_name_or_path
    return byte_level_tokenizer() if name is None else AutoTokenizer.from_pretrained(name)


# ---------------------------------------------------------------------------------------------------------------
# The pre-training mask and the SFT examples


def mask_inputs(input_ids: torch.Tensor, positions: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """A copy of ``input_ids`` (batch, L) with the columns ``positions`` (num_masked,) set to ``mask_token_id``:
    the same positions in every sequence of the batch."""
    masked = input_ids.clone()
    masked[:, positions.to(input_ids.device)] = mask_token_id
    return masked


def meap_sft_examples(prompt_ids: Sequence[int], answer_ids: Sequence[int], *, mask_token_id: int,
                      eos_token_id: int, mask_ratio: float = 0.1, max_length: int = 2048,
                      answer_threshold: int = 50, rng: random.Random | None = None) -> list[dict]:
    """MEAP's SFT examples of one (prompt, answer) turn, as lists of ints (``input_ids``, ``attention_mask``,
    ``labels``), ready for a padding collator (e.g. transformers' ``DataCollatorForSeq2Seq``).

    1. the plain example: ``prompt + answer + [eos]`` (cut to ``max_length`` with EOS kept last); labels -100 on the
       prompt, the tokens themselves on the answer and EOS (transformers shifts them: position t predicts t + 1);
    2. only when ``len(answer_ids) > answer_threshold``: the masked copy ``(prompt + answer)[:end] + [eos]`` with
       ``end = min(len(prompt) + len(answer), max_length - 1)``, in which ``max(1, int((end - len(prompt)) *
       mask_ratio))`` answer positions, drawn without replacement by ``rng``, hold ``mask_token_id``; labels are the
       original token at those positions only (-100 elsewhere, EOS included).
    """
    for name, ids in (("prompt_ids", prompt_ids), ("answer_ids", answer_ids)):
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise TypeError(f"{name} must be a sequence of token ids (ints), got {list(ids)[:5]!r}...")
    if not answer_ids:
        raise ValueError("answer_ids is empty: an SFT turn needs an answer to learn")
    check_rate("mask_ratio", mask_ratio)
    check_int("max_length", max_length, minimum=2)
    check_int("answer_threshold", answer_threshold, minimum=0)
    rng = rng if rng is not None else random.Random(0)
    prompt, answer = list(prompt_ids), list(answer_ids)

    sequence = prompt + answer + [eos_token_id]
    labels = [IGNORE_INDEX] * len(prompt) + answer + [eos_token_id]
    if len(sequence) > max_length:
        sequence = sequence[: max_length - 1] + [eos_token_id]
        labels = labels[: max_length - 1] + [eos_token_id if max_length - 1 >= len(prompt) else IGNORE_INDEX]
    examples = [dict(input_ids=sequence, attention_mask=[1] * len(sequence), labels=labels)]

    start, full = len(prompt), prompt + answer
    end = min(len(full), max_length - 1)
    if len(answer) > answer_threshold and end > start:
        count = max(1, int((end - start) * mask_ratio))
        positions = rng.sample(range(start, end), count)
        masked, masked_labels = full[:end], [IGNORE_INDEX] * end
        for position in positions:
            masked[position] = mask_token_id
            masked_labels[position] = full[position]
        masked, masked_labels = masked + [eos_token_id], masked_labels + [IGNORE_INDEX]
        examples.append(dict(input_ids=masked, attention_mask=[1] * len(masked), labels=masked_labels))
    return examples


# ---------------------------------------------------------------------------------------------------------------
# Models


@dataclass
class MEAPCausalLMOutput(ModelOutput):
    """
    loss: next-token cross-entropy against the *original* tokens (``labels``; in pre-training the unmasked inputs).
    logits: (batch, L, vocab) the LM's next-token logits.
    mask: (batch, L) float, 1 where the input held ``[MASK]`` (None when nothing was masked).
    cache, hidden_states, attentions: as the wrapped LM returns them.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class MEAPPreTrainedModel(MaskedModelPreTrainedModel):
    """Holds a transformers causal LM as ``self.lm``, initialised by its own rules (``initialize_weights`` of the
    base: a nested transformers model first), with its attention backends and checkpointing."""

    config_class = MEAPConfig
    main_input_name = "input_ids"
    _no_split_modules = []

    def __init__(self, config: MEAPConfig, lm: PreTrainedModel | None = None, tokenizer=None):
        super().__init__(config)
        if lm is not None and not isinstance(lm, PreTrainedModel):
            raise TypeError(f"lm must be a transformers PreTrainedModel (a causal LM), got {type(lm).__name__}")
        fresh = lm is None
        lm = lm if lm is not None else build_causal_lm(config)
        if config.mask_token_id is None or tokenizer is not None:
            tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config)
            with torch.random.fork_rng(devices=[]):  # the [MASK] row's init: reproducible, the global RNG untouched
                torch.manual_seed(config.lm_seed + 1)
                config.mask_token_id = meap_transform(lm, tokenizer, config.mask_token)
        rows = lm.get_input_embeddings().weight.shape[0]
        if config.mask_token_id >= rows:
            raise ValueError(f"mask_token_id {config.mask_token_id} is past the LM's {rows} embedding rows; the LM "
                             "must have been resized for [MASK] (meap_transform)")
        config.lm_config = lm_config_dict(lm)  # a saved checkpoint rebuilds this LM (resized) from its config
        self.lm = lm
        tied = getattr(lm, "_tied_weights_keys", None) or {}
        if isinstance(tied, Mapping):
            self._tied_weights_keys = {f"lm.{key}": f"lm.{value}" for key, value in tied.items()}
        self.post_init()
        # warm start: the named LM's weights, on a fresh build only (from_pretrained loads the checkpoint's own)
        self.warm_start_info = None
        if fresh and config.lm_name_or_path is not None and warm_start_enabled():
            self.warm_start_info = load_lm_weights(self.lm, config.lm_name_or_path)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        with no_warm_start():
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @property
    def base_model(self) -> PreTrainedModel:
        """The wrapped LM's decoder stack without its head (Llama: ``lm.model``), whose own classes capture hidden
        states and attentions (``output_hidden_states`` / ``output_attentions``)."""
        return self.lm.base_model

    def get_input_embeddings(self):
        return self.lm.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.lm.set_input_embeddings(value)

    def check_inputs(self, input_ids, attention_mask) -> None:
        if input_ids is not None:
            check_token_inputs(input_ids, attention_mask, vocab_size=self.lm.get_input_embeddings().weight.shape[0])

    def save_lm(self, save_directory, tokenizer=None, **kwargs) -> None:
        """Writes the wrapped LM as a plain transformers checkpoint (``AutoModelForCausalLM.from_pretrained`` loads
        it without hf-mae) and, when given, the tokenizer with its ``[MASK]`` (``AutoTokenizer``). ``hf-mae
        pretrain`` writes it to ``RUN/lm``."""
        self.lm.save_pretrained(save_directory, **kwargs)
        if tokenizer is not None:
            if tokenizer.mask_token_id != self.config.mask_token_id:
                raise ValueError(f"tokenizer's mask token id {tokenizer.mask_token_id} is not the model's "
                                 f"{self.config.mask_token_id}: save the tokenizer the model was built with")
            plain = copy.copy(tokenizer)  # not the processor's: no "processor_class" in the LM's tokenizer_config
            plain._processor_class = None
            plain.save_pretrained(save_directory)


class MEAPModel(MEAPPreTrainedModel):
    """The LM's decoder stack as a feature extractor (``AutoModel``): no masking, ``last_hidden_state`` (batch, L,
    hidden). It holds the whole LM (its head unused) so that it loads a ``MEAPForCausalLM`` checkpoint key for key."""

    def forward(self, input_ids=None, attention_mask=None, **kwargs) -> BaseModelOutputWithPast:
        self.check_inputs(input_ids, attention_mask)
        kwargs.setdefault("use_cache", False)  # features, not generation
        return self.base_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


class MEAPForCausalLM(MEAPPreTrainedModel):
    """A causal LM trained with MEAP (``AutoModelForCausalLM``, also the pre-training class).

    In training mode with ``mode="pretrain"`` every forward replaces the step's mask positions by ``[MASK]`` in all
    sequences and scores the LM against the original tokens. The step is the optimiser step that the training loop
    hands to :meth:`after_optimizer_step` (``hf-mae pretrain`` and the Trainer callback do); without that hook each
    training forward moves to the next step. In eval mode, or in ``mode="sft"``, it is the plain LM.
    """

    def __init__(self, config: MEAPConfig, lm: PreTrainedModel | None = None, tokenizer=None):
        super().__init__(config, lm=lm, tokenizer=tokenizer)
        self.mask_step = 0  # the optimiser step whose positions the next training forward uses
        self._step_from_hook = False

    def after_optimizer_step(self, step: int | None = None) -> bool:
        """Call after every optimiser step with the number of steps done (None: one more): the next batches use
        that step's positions. From the first call on, forwards no longer advance the step. Returns False (no
        teacher moves; the EMA hooks' convention)."""
        step = self.mask_step + 1 if step is None else step
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0 (optimiser steps done), got {step!r}")
        self.mask_step, self._step_from_hook = step, True
        return False

    def mask_positions_for(self, length: int, step: int | None = None, mask_ratio: float | None = None):
        """The (num_masked,) positions MEAP masks in a batch of ``length``-token sequences at ``step`` (default:
        the current step)."""
        step = self.mask_step if step is None else step
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        return step_seeded_positions(length, ratio, self.config.step_seed(step))

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, mask_positions: torch.Tensor | None = None,
                step: int | None = None, mask_ratio: float | None = None, **kwargs) -> MEAPCausalLMOutput:
        r"""
        input_ids: (batch, L) token ids; attention_mask: (batch, L), 0 on padding.
        labels: (batch, L) targets (transformers shifts them); default when masking: the unmasked ``input_ids``
            with -100 on padding.
        mask_positions: (num_masked,) positions to mask in every sequence, in any mode (deterministic).
        step, mask_ratio: mask the positions of that step / at that ratio, in any mode (default: the current step
            and ``config.mask_ratio``, in training with ``mode="pretrain"`` only).
        """
        self.check_inputs(input_ids, attention_mask)
        return_dict = kwargs.pop("return_dict", None)
        pretraining = self.training and self.config.mode == "pretrain"
        masking = mask_positions is not None or step is not None or mask_ratio is not None or (
            pretraining and self.config.mask_ratio > 0)
        mask = None
        if (masking or pretraining) and input_ids is not None and labels is None:
            # the next-token targets are the original tokens (padding ignored)
            labels = input_ids if attention_mask is None else input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        if masking and input_ids is not None:
            if mask_positions is None:
                mask_positions = self.mask_positions_for(input_ids.shape[1], step, mask_ratio)
                if step is None and self.training and not self._step_from_hook:
                    self.mask_step += 1  # no training loop hands steps over: every batch is a step
            mask = torch.zeros(input_ids.shape, device=input_ids.device)
            mask[:, mask_positions.to(input_ids.device)] = 1.0
            input_ids = mask_inputs(input_ids, mask_positions, self.config.mask_token_id)
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, labels=labels, return_dict=True, **kwargs)
        output = MEAPCausalLMOutput(loss=out.loss, logits=out.logits, mask=mask, cache=out.cache,
                                    hidden_states=out.hidden_states, attentions=out.attentions)
        return output.to_tuple() if return_dict is False else output

    def generate(self, *args, **kwargs):
        """The wrapped LM's ``generate`` (MEAP generates as a plain causal LM)."""
        return self.lm.generate(*args, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# The processor


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
    """hf-mae's byte-level tokenizer, the ``meap-tiny`` preset's (hf-mae's choice): 259 ids, ``<pad>`` 0, ``<s>`` 1,
    ``</s>`` 2, then byte ``b`` at ``3 + b``, no merges; it prefixes ``<s>``. Built in code (nothing trained or
    downloaded, the same ids everywhere), it tokenises any text and has no ``[MASK]``, which MEAP adds at 259. (The
    real MiniLM WordPiece at hand is an uncased BERT tokenizer with [CLS]/[SEP] that already holds [MASK]: a poor
    fit for a causal LM, and a 30,522-id softmax on CPU.)"""
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


class MEAPProcessor(TextProcessor):
    """A causal LM's tokenizer with MEAP's ``[MASK]`` (added here when it has no mask token).

    ``processor(texts, return_tensors="pt")``: ``input_ids`` / ``attention_mask`` (batch, L), padded to the longest
    text, cut to ``max_length`` with a warning. ``for_pretraining=True`` adds ``labels``: the unmasked ids, -100 on
    padding. MEAP's mask is **not** drawn here (unlike the MLM methods'): the model draws it per batch from the
    optimiser step, the same positions for the whole batch, so the generator is unused.
    """

    def __init__(self, tokenizer=None, max_length: int = 2048, mask_token: str = "[MASK]", **kwargs):
        self.mask_token = mask_token
        super().__init__(tokenizer, max_length=max_length, **kwargs)
        if tokenizer is not None:
            add_mask_token(tokenizer, mask_token)

    @classmethod
    def from_model_config(cls, config, **settings):
        name = config.tokenizer_name_or_path or config.lm_name_or_path
        tokenizer = byte_level_tokenizer() if name is None else AutoTokenizer.from_pretrained(name)
        settings.setdefault("max_length", config.max_length)
        processor = cls(tokenizer, mask_token=config.mask_token, **settings)
        if config.mask_token_id is not None and tokenizer.mask_token_id != config.mask_token_id:
            raise ValueError(f"the tokenizer {name or 'byte_level_tokenizer()'} puts {config.mask_token} at id "
                             f"{tokenizer.mask_token_id}, the config expects mask_token_id {config.mask_token_id}")
        return processor

    @property
    def mask_token_id(self) -> int:
        return self.tokenizer.mask_token_id

    def pretraining_inputs(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}


# ---------------------------------------------------------------------------------------------------------------
# The registry row

# tiny random Llama for tests and quick starts; vocab 260 = hf-mae's byte-level tokenizer (3 specials + 256 bytes)
# plus the [MASK] it gains (id 259), so the preset needs no tokenizer to build (the processor builds the tokenizer)
TINY_LM = dict(model_type="llama", vocab_size=260, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1,
               eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
# the paper's tiny_LLaMA_0.1b_mask (lit_gpt/config.py): 12 layers x 12 heads, 768-d, MLP 2048, 2 key-value groups,
# RMSNorm, RoPE, block 4096, vocab 32064 (the Llama tokenizer's 32000 + [MASK] at 32000, padded to 64)
LLAMA_01B = dict(model_type="llama", vocab_size=32064, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                 num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-5,
                 bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)

METHOD = dict(
    name="meap",
    paper="Mask-Enhanced Autoregressive Prediction: Pay Less Attention to Learn More (Zhuang et al., ICML 2025), "
          "arXiv:2502.07490",
    config_class=MEAPConfig,
    model_classes={"base": MEAPModel, "pretraining": MEAPForCausalLM, "causal-lm": MEAPForCausalLM},
    processor="MEAPProcessor",
    presets={
        "meap-tiny": dict(lm_config=TINY_LM, mask_token_id=259, max_length=256),
        # the paper's 0.1B pre-training: mask 0.1 of a 4096 block; the official 0.1B scripts seed 50 + step % 51;
        # the tokenizer is TinyLlama's Llama tokenizer (the official repo ships it with [MASK] added at 32000)
        "meap-llama-0.1b": dict(lm_config=LLAMA_01B, mask_token_id=32000, max_length=4096, mask_seed=50,
                                mask_seed_cycle=51, tokenizer_name_or_path="TinyLlama/TinyLlama_v1.1"),
    },
    modality="text",
    pretrain_lr=4e-4,  # the official 0.1B recipe: AdamW 4e-4 (cosine to 4e-5), betas (0.9, 0.95), wd 0.05
    pretrain_betas=(0.9, 0.95),
    pretrain_weight_decay=0.05,
)
