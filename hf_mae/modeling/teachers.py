"""Teachers and targets: the one home of the EMA teacher, the frozen teacher and the choice of reconstruction target.

**EMA teacher** (HPM, LUT; next BYOL/iBOT-style methods). :class:`EMATeacher` holds copies of parts of a student
(its encoder, a head...) whose weights are *buffers*: saved with the model, so a resumed run continues with the
same teacher, but invisible to the optimiser, to DDP's gradient sync and to "every parameter gets a gradient"
checks. ``teacher.update(student, step)`` moves it: ``teacher <- m * teacher + (1 - m) * student`` with the momentum
``m`` of its :class:`MomentumSchedule` (linear, or BYOL's / iBOT's half cosine from a base momentum up to an end,
usually 1) at ``step``.

**The optimiser-step hook.** A model with an EMA teacher (:class:`EMATeacherMixin`) has
``model.after_optimizer_step(step)``: call it after every *real* optimiser step (with gradient accumulation: once
per accumulated step, not per micro-batch), passing the number of optimiser steps done so far. ``hf-mae pretrain``
does; so should a hand-written loop::

    model.after_optimizer_step(0)             # before the first step (or the step a resumed run starts at)
    for step, batch in enumerate(loader, 1):
        model(**batch).loss.backward(); optimizer.step(); optimizer.zero_grad()
        model.after_optimizer_step(step)      # the teacher moves once, with the momentum of `step`

The call is idempotent per step number (a step already applied is not applied twice) and the first call hands the
teacher to the caller: from then on forwards leave it alone. A model that never gets the call keeps the earlier
behaviour: every training forward first moves the teacher one step (exact without gradient accumulation).

**Frozen teacher** (I2P-MAE's image encoder, TGM's CLIP scorer; next MaskAlign, MR-MAE...): any transformers
``AutoModel`` given by Hub name or folder, by config dict (randomly initialised from a seed: what tests use) or as
an instance (:func:`build_auto_model`, :func:`freeze`). :class:`FrozenTeacherMixin` holds it *outside* the model's
module tree, so it is in neither the state dict, the optimiser nor DDP / FSDP, unless asked (``save=True``).

**Targets**: :func:`reconstruction_target` picks pixels, HOG or teacher features (the generators live in
``targets.py``).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import copy
import contextlib
import inspect
import math
import os
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from .masking import gather_tokens
from .targets import hog_target, pixel_target

SCHEDULES = ("linear", "cosine")
TARGET_KINDS = ("pixels", "hog", "teacher")


# ---------------------------------------------------------------------------------------------------------------
# EMA teacher


@dataclass(frozen=True)
class MomentumSchedule:
    """The EMA momentum ``m`` over training: from ``start`` to ``end`` over the first ``ramp`` share of
    ``total_steps`` (then ``end``), on a straight line (``"linear"``, HPM) or a half cosine (``"cosine"``, BYOL /
    iBOT / LUT: ``end - (end - start) * (1 + cos(pi * p)) / 2``)."""

    start: float
    end: float
    total_steps: int
    kind: str = "cosine"
    ramp: float = 1.0

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"kind must be one of {SCHEDULES}, got {self.kind!r}")
        for name in ("start", "end", "ramp"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if isinstance(self.total_steps, bool) or not isinstance(self.total_steps, int) or self.total_steps < 1:
            raise ValueError(f"total_steps must be a positive int, got {self.total_steps!r}")

    def at_progress(self, progress: float) -> float:
        """The momentum at ``progress`` in [0, 1] of training."""
        if self.ramp == 0 or progress >= self.ramp:
            return self.end
        p = progress / self.ramp
        if self.kind == "linear":
            return self.start + p * (self.end - self.start)
        return self.end - (self.end - self.start) * (1 + math.cos(math.pi * p)) / 2

    def __call__(self, step: int) -> float:
        """The momentum after ``step`` optimiser steps."""
        return self.at_progress(min(1.0, step / self.total_steps))


def parameters_to_buffers(module: nn.Module) -> nn.Module:
    """Turns every parameter of ``module`` (and its children) into a buffer of the same name, in place."""
    for child in module.modules():
        for name, param in list(child._parameters.items()):
            if param is not None:
                del child._parameters[name]
                child.register_buffer(name, param.detach())
    return module


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a sharded one (an FSDP2 ``DTensor`` parameter: a collective, every rank calls it)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


class EMATeacher(nn.Module):
    """An exponential moving average of named parts of a student, its weights held as buffers.

    parts: name -> a module built like the student's part of that name (same parameter names), e.g.
        ``EMATeacher(schedule, encoder=MAEModel(config), projector=mlp(config))``; its parameters become buffers,
        saved as ``<attribute>.<name>.<...>``. Call :meth:`copy_from` once the student is initialised.
    schedule: the momentum over training (:class:`MomentumSchedule`); not saved (it comes from the config).
    Only parameters are averaged; the parts' own buffers (sin-cos tables, ...) are left as built.
    """

    def __init__(self, schedule: MomentumSchedule, **parts: nn.Module):
        super().__init__()
        if not parts:
            raise ValueError("EMATeacher needs at least one part (name=module)")
        for name, part in parts.items():
            self.add_module(name, parameters_to_buffers(part))
        self.schedule = schedule
        # True once a caller drives the updates (EMATeacherMixin.after_optimizer_step); not saved
        self.updated_by_hook = False

    def pairs(self, student: Mapping[str, nn.Module]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(teacher buffers, student parameters) matched by name; ``student`` maps each part name to its module."""
        if set(student) != set(self._modules):
            raise ValueError(f"student must name the teacher's parts {sorted(self._modules)}, got {sorted(student)}")
        mine = dict(self.named_buffers())
        targets, sources = [], []
        for part, module in student.items():
            for name, param in module.named_parameters():
                targets.append(mine[f"{part}.{name}"])
                sources.append(param)
        return targets, sources

    @torch.no_grad()
    def move_towards(self, student: Mapping[str, nn.Module], momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * student (momentum 0 copies, 1 keeps)."""
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        targets, sources = self.pairs(student)
        sources = [full_tensor(p.detach()).to(t.dtype) for t, p in zip(targets, sources)]
        if momentum == 0.0:
            torch._foreach_copy_(targets, sources)
        elif momentum < 1.0:
            torch._foreach_lerp_(targets, sources, 1.0 - momentum)

    def copy_from(self, student: Mapping[str, nn.Module]) -> None:
        """The teacher becomes an exact copy of the student's parameters (the start of training)."""
        self.move_towards(student, 0.0)

    def update(self, student: Mapping[str, nn.Module], step: int) -> float:
        """One EMA step with the schedule's momentum after ``step`` optimiser steps; returns that momentum."""
        momentum = self.schedule(step)
        self.move_towards(student, momentum)
        return momentum


class EMATeacherMixin:
    """For a ``PreTrainedModel`` with an :class:`EMATeacher` in ``self.teacher``: the optimiser-step hook.

    The class sets ``teacher_step_buffer``, the name of its saved step counter (a long scalar buffer), and
    implements ``teacher_student()`` (part name -> student module, the teacher's sources).
    """

    teacher_step_buffer: str = "teacher_step"

    def teacher_student(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    @property
    def teacher_step(self) -> int:
        """Optimiser steps the teacher has followed (the saved counter)."""
        return int(getattr(self, self.teacher_step_buffer).item())

    @torch.no_grad()
    def after_optimizer_step(self, step: int | None = None) -> bool:
        """Call after every real optimiser step with the number of steps done (None: one more than the counter).

        Moves the teacher once with the momentum of ``step`` and sets the counter to ``step``; a step the counter
        has already reached is not applied again (so ``after_optimizer_step(0)`` before training, or the resumed
        step, only hands the teacher to the caller). From the first call on, forwards no longer move the teacher.
        Returns whether the teacher moved."""
        counter = getattr(self, self.teacher_step_buffer)
        if step is None:
            step = int(counter.item()) + 1
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0 (optimiser steps done), got {step!r}")
        self.teacher.updated_by_hook = True
        if step <= counter.item():
            return False
        counter.fill_(step)
        self.teacher.update(self.teacher_student(), step)
        return True


# ---------------------------------------------------------------------------------------------------------------
# Frozen teacher


def build_auto_model(name_or_path: str | None = None, config: dict | None = None, seed: int | None = None,
                     auto_class=None, **kwargs):
    """A transformers ``AutoModel``: randomly initialised from ``config`` (a dict with ``model_type``) when given,
    from ``seed`` without touching the global RNG when that is given too; else ``from_pretrained(name_or_path)``.
    ``auto_class`` (default ``AutoModel``) picks another Auto class, e.g. ``AutoModelForDepthEstimation`` for a
    model whose head is wanted (MultiMAE's pseudo-labellers). ``kwargs`` go to ``from_config`` / ``from_pretrained``
    (e.g. ``attn_implementation="eager"``)."""
    auto_class = AutoModel if auto_class is None else auto_class
    if config is not None:
        if not isinstance(config, Mapping) or "model_type" not in config:
            raise ValueError(f"config must be a config dict with a 'model_type' key, got {config!r}")
        settings = dict(config)
        auto_config = AutoConfig.for_model(settings.pop("model_type"), **settings)
        if seed is None:
            return auto_class.from_config(auto_config, **kwargs)
        with torch.random.fork_rng(devices=[]):  # reproducible from the seed, the global RNG untouched
            torch.manual_seed(seed)
            return auto_class.from_config(auto_config, **kwargs)
    if name_or_path is None:
        raise ValueError("build_auto_model needs a name_or_path (Hub id or folder) or a config dict")
    return auto_class.from_pretrained(name_or_path, **kwargs)


def freeze(model: nn.Module) -> nn.Module:
    """No gradients and eval mode (no dropout), in place; returns ``model``."""
    return model.requires_grad_(False).eval()


class FrozenTeacherMixin:
    """For a model that learns from frozen transformers models (teachers, scorers) held by attribute name.

    A teacher is kept out of the module tree (``self.__dict__``): it is in neither ``state_dict()``, ``parameters()``
    (so no optimiser), DDP's sync nor FSDP's sharding, and ``model.to()`` / ``model.train()`` leave it alone (it
    moves to the input's device when used). With ``save=True`` it is a submodule instead: saved with the model, still
    frozen and kept in eval mode by ``train()``.
    """

    def set_frozen_teacher(self, name: str, teacher: nn.Module | None, save: bool = False):
        """Holds ``teacher`` (frozen here) as ``self.<name>``; None leaves the slot empty (built on first use)."""
        if teacher is not None and not isinstance(teacher, nn.Module):
            raise TypeError(f"{name} must be an nn.Module (a transformers model), got {type(teacher).__name__}")
        self.__dict__.pop(name, None)
        self._modules.pop(name, None)
        saved = self.__dict__.setdefault("_saved_teachers", set())
        saved.discard(name)
        if teacher is not None and save:
            self.add_module(name, freeze(teacher))
            saved.add(name)
        else:
            self.__dict__[name] = None if teacher is None else freeze(teacher)
        return teacher

    def frozen_teacher(self, name: str, device: torch.device, build: Callable[[], nn.Module]) -> nn.Module:
        """``self.<name>`` on ``device``, built by ``build()`` (and frozen) the first time it is needed."""
        teacher = getattr(self, name)
        if teacher is None:
            teacher = self.set_frozen_teacher(name, build())
        first = next(teacher.parameters(), None)
        if first is not None and first.device != torch.device(device):
            teacher.to(device)
        return teacher

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.__dict__.get("_saved_teachers", ()):
            self._modules[name].eval()  # a saved teacher stays frozen in eval mode
        return self


# ---------------------------------------------------------------------------------------------------------------
# Frozen teachers described by config fields, and what a ViT-like image teacher sees


def check_teacher_fields(config, prefix: str = "teacher") -> None:
    """Validates a config's ``<prefix>_name_or_path`` (str or None), ``<prefix>_config`` (None or a dict with
    ``model_type``; deep-copied so presets never share it) and ``<prefix>_seed`` (int). Call in ``__post_init__``."""
    name = getattr(config, f"{prefix}_name_or_path")
    if name is not None and not (isinstance(name, str) and name):
        raise ValueError(f"{prefix}_name_or_path must be a Hub id or folder (a non-empty str) or None, got {name!r}")
    settings = getattr(config, f"{prefix}_config")
    if settings is not None:
        if not (isinstance(settings, Mapping) and "model_type" in settings):
            raise ValueError(f"{prefix}_config must be a config dict with a 'model_type' key or None, got {settings!r}")
        setattr(config, f"{prefix}_config", copy.deepcopy(dict(settings)))
    seed = getattr(config, f"{prefix}_seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{prefix}_seed must be an int, got {seed!r}")


def build_frozen_teacher(config, prefix: str = "teacher", **kwargs) -> nn.Module:
    """The frozen teacher a config describes: randomly initialised from ``<prefix>_config`` and ``<prefix>_seed``
    when that is set (tests), else ``from_pretrained(<prefix>_name_or_path)`` (a Hub id or a folder, e.g. an hf-mae
    run: ``AutoModel`` gives its encoder). Eager attention (attention maps are readable), no gradients, eval mode."""
    name, settings = getattr(config, f"{prefix}_name_or_path"), getattr(config, f"{prefix}_config")
    if name is None and settings is None:
        raise ValueError(f"{type(config).__name__} needs a teacher: set {prefix}_name_or_path or {prefix}_config, "
                         "or pass the model instance to the constructor")
    kwargs.setdefault("attn_implementation", "eager")
    return freeze(build_auto_model(name, settings, seed=getattr(config, f"{prefix}_seed"), **kwargs))


# where ViT-like encoders keep their blocks: hf-mae's encoders, ViT / DINO / ViTMAE, CLIP's vision tower
BLOCK_LISTS = ("layers", "encoder.layer", "encoder.layers", "vision_model.encoder.layers")


def teacher_core(model: nn.Module) -> nn.Module:
    """The image encoder inside ``model`` (CLIP's ``vision_model``; the model itself otherwise)."""
    return getattr(model, "vision_model", model)


def teacher_blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a ViT-like encoder, in order; TypeError if none is found."""
    for path in BLOCK_LISTS:
        module = model
        for attribute in path.split("."):
            module = getattr(module, attribute, None)
        if isinstance(module, nn.ModuleList) and len(module):
            return module
    raise TypeError(f"the teacher ({type(model).__name__}) is no ViT-like encoder: none of {BLOCK_LISTS} is a block list")


def teacher_grid(model: nn.Module) -> tuple[int, int]:
    """The patch grid of a ViT-like teacher at its own ``image_size``."""
    config = teacher_core(model).config
    image, patch = config.image_size, config.patch_size
    image = (image, image) if isinstance(image, int) else tuple(image)
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    return image[0] // patch[0], image[1] // patch[1]


def resize_token_grid(tokens: torch.Tensor, grid, new_grid) -> torch.Tensor:
    """(n, rows * cols, d) patch tokens on ``grid`` -> (n, new_rows * new_cols, d), bilinearly (identity if equal)."""
    grid, new_grid = tuple(grid), tuple(new_grid)
    if grid == new_grid:
        return tokens
    n, _, dim = tokens.shape
    maps = tokens.transpose(1, 2).reshape(n, dim, *grid).float()
    maps = nn.functional.interpolate(maps, size=new_grid, mode="bilinear", align_corners=False)
    return maps.flatten(2).transpose(1, 2).to(tokens.dtype)


class _StopForward(Exception):
    """Raised by the hook on a truncated teacher's last needed block: the blocks after it never run."""


@dataclass
class TeacherFeatures:
    """What a ViT-like teacher computed for a batch (see :func:`teacher_forward`).

    hidden_states: ``[i]`` is the output of block ``i + 1``, (n, P + N, d), before any final norm, the ``P`` prefix
        tokens (cls, registers, ...) first.
    last_hidden_state: the model's final output (after its final norm), None when the run was truncated.
    attentions: per block (n, heads, P + N, P + N) when asked for, else None.
    num_prefix_tokens: P; grid: the teacher's patch grid (rows, cols).
    """

    hidden_states: tuple
    last_hidden_state: torch.Tensor | None
    attentions: tuple | None
    num_prefix_tokens: int
    grid: tuple

    def patch_tokens(self, tokens: torch.Tensor, grid=None) -> torch.Tensor:
        """(n, P + N, ...) -> (n, N, ...) without the prefix tokens; resized to ``grid`` (the student's) if given."""
        patches = tokens[:, self.num_prefix_tokens:]
        return patches if grid is None else resize_token_grid(patches, self.grid, grid)

    def cls_attention(self, layer: int = -1) -> torch.Tensor:
        """(n, N): the first token's attention to every patch in block ``layer``, averaged over heads (as
        MaskAlign and I2P-MAE score patches)."""
        if self.attentions is None:
            raise ValueError("teacher_forward was called without output_attentions=True")
        return self.attentions[layer].float().mean(dim=1)[:, 0, self.num_prefix_tokens:]


@torch.no_grad()
def teacher_forward(
    teacher: nn.Module,
    pixel_values: torch.Tensor,
    *,
    stop_after: int | None = None,
    output_attentions: bool = False,
    image_mean=None,
    image_std=None,
    input_mean=(0.485, 0.456, 0.406),
    input_std=(0.229, 0.224, 0.225),
    **teacher_kwargs,
) -> TeacherFeatures:
    """Runs a frozen ViT-like image teacher (ViT / DINO, CLIP, hf-mae's encoders, ViTMAE) without gradients.

    pixel_values: (n, C, H, W) normalised with ``input_mean`` / ``input_std`` (the processors' ImageNet ones); when
        ``image_mean`` / ``image_std`` are given (CLIP's), they are re-normalised to those; images of another size
        than the teacher's ``image_size`` are resized to it (bicubic).
    stop_after: run only blocks 1..k (hooks stop the forward there: later blocks never run, so a truncated teacher
        costs k / depth of a full one); None runs the whole model.
    output_attentions: also return every block's attention maps (the teacher must use eager attention; not with
        ``stop_after``).
    teacher_kwargs: passed to the teacher's forward (e.g. ``noise=`` and ``mask_ratio=`` for an MAE teacher, which
        then sees the student's visible patches only).
    """
    core = teacher_core(teacher)
    blocks = teacher_blocks(core)
    if stop_after is not None:
        if isinstance(stop_after, bool) or not isinstance(stop_after, int) or not 1 <= stop_after <= len(blocks):
            raise ValueError(f"stop_after must be a block number in [1, {len(blocks)}] or None, got {stop_after!r}")
        if output_attentions:
            raise ValueError("output_attentions needs the whole teacher; it cannot be combined with stop_after")
    first = next(teacher.parameters())
    images = pixel_values.to(device=first.device, dtype=torch.float32)
    if image_mean is not None or image_std is not None:
        def column(values):
            return torch.as_tensor(values, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        raw = images * column(input_std) + column(input_mean)
        images = (raw - column(image_mean if image_mean is not None else input_mean)) / column(
            image_std if image_std is not None else input_std)
    size = core.config.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) != size:
        images = nn.functional.interpolate(images, size=size, mode="bicubic", align_corners=False)

    states: list[torch.Tensor] = []
    last = stop_after if stop_after is not None else len(blocks)

    def record(module, args, output):
        states.append(output[0] if isinstance(output, (tuple, list)) else output)
        if len(states) == last and stop_after is not None:
            raise _StopForward

    handles = [block.register_forward_hook(record) for block in blocks[:last]]
    unmasked_vit_mae = getattr(core.config, "model_type", None) == "vit_mae" and "noise" not in teacher_kwargs
    if unmasked_vit_mae:
        # transformers' ViTMAEModel hides config.mask_ratio of the patches (in a random order) on every call: with
        # no noise given, run it on every patch in order (mask ratio 0 for this call, the identity order as noise)
        mask_ratio, core.config.mask_ratio = core.config.mask_ratio, 0.0
        grid = teacher_grid(core)
        order = torch.arange(grid[0] * grid[1], device=first.device, dtype=torch.float32)
        teacher_kwargs = dict(teacher_kwargs, noise=order.expand(images.shape[0], -1))
    out = None
    try:
        out = core(pixel_values=images.to(first.dtype), output_attentions=output_attentions, **teacher_kwargs)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
        if unmasked_vit_mae:
            core.config.mask_ratio = mask_ratio
            teacher_kwargs.pop("noise")
    grid = teacher_grid(core)
    attentions = None
    if output_attentions:
        attentions = getattr(out, "attentions", None)
        if not attentions:
            raise ValueError(f"the teacher ({type(teacher).__name__}) returned no attention weights; load it with "
                             'attn_implementation="eager" (sdpa / flash attention do not return them)')
    num_tokens = states[0].shape[1]
    visible = grid[0] * grid[1]
    if "noise" in teacher_kwargs or "bool_masked_pos" in teacher_kwargs:  # a masked teacher: fewer patch tokens
        visible = num_tokens - _prefix_count(core)
    return TeacherFeatures(
        hidden_states=tuple(states),
        last_hidden_state=None if out is None else out.last_hidden_state,
        attentions=attentions,
        num_prefix_tokens=num_tokens - visible,
        grid=grid,
    )


def _prefix_count(core: nn.Module) -> int:
    """Tokens before the patches: a cls token, plus register tokens where the config has them."""
    return 1 + int(getattr(core.config, "num_register_tokens", 0) or 0)


# ---------------------------------------------------------------------------------------------------------------
# Feature distillation from a frozen ViT-like teacher (DMAE, MR-MAE): its width, and its tokens at the patches a
# masked student sees.


def teacher_width(config, prefix: str = "teacher", teacher: nn.Module | None = None) -> int:
    """Width of the tokens of ``teacher`` (an instance), else of the teacher the ``<prefix>_*`` fields describe: its
    image encoder's ``hidden_size`` (CLIP's vision tower's), read from the config without building the model (a
    Hub id's config.json is fetched: set ``<prefix>_hidden_size`` to avoid that)."""
    if teacher is not None:
        return teacher_vision_config(teacher).hidden_size
    described = described_teacher_config(config, prefix)
    if described is None:
        name = getattr(config, f"{prefix}_name_or_path", None)
        if name is None:
            raise ValueError(f"no {prefix}: set {prefix}_name_or_path or {prefix}_config, or pass {prefix}=")
        described = AutoConfig.from_pretrained(name)
        described = getattr(described, "vision_config", described)
    return described.hidden_size


def teacher_masks_like_mae(teacher: nn.Module) -> bool:
    """Whether the teacher's forward takes MAE's ``noise`` (hf-mae's MAE encoders, transformers' ViTMAEModel), so
    that it can encode only the patches a student keeps under the same noise."""
    return "noise" in inspect.signature(teacher_core(teacher).forward).parameters


@contextlib.contextmanager
def config_mask_ratio(teacher: nn.Module, ratio: float | None):
    """Sets ``teacher.config.mask_ratio`` to ``ratio`` for the duration (None: leaves it): transformers'
    ``ViTMAEModel`` reads its mask ratio from its config at call time and takes none as an argument."""
    if ratio is None:
        yield
        return
    config = teacher_core(teacher).config
    before = config.mask_ratio
    config.mask_ratio = ratio
    try:
        yield
    finally:
        config.mask_ratio = before


@torch.no_grad()
def teacher_visible_tokens(
    teacher: nn.Module,
    pixel_values: torch.Tensor,
    layers,
    ids_keep: torch.Tensor,
    grid,
    *,
    noise: torch.Tensor | None = None,
    mask_ratio: float | None = None,
    image_mean=None,
    image_std=None,
) -> tuple[list[torch.Tensor], bool]:
    """The teacher's tokens at the patches a masked student sees: for each block number k of ``layers`` (1-based),
    (batch, 1 + kept, dim) = the teacher's first prefix (cls) token, then its tokens at ``ids_keep`` (batch, kept)
    of the student's patch ``grid``, in that order. The teacher runs blocks 1..max(layers) only.

    With ``noise`` and a teacher that masks as MAE does (:func:`teacher_masks_like_mae`) on the student's grid, the
    teacher encodes only the visible patches, drawn from the same noise (DMAE); ``mask_ratio`` goes to a teacher
    that takes it. Otherwise the teacher sees the whole image and its patch tokens are resized to ``grid`` and
    gathered at ``ids_keep``. Returns (tokens per layer, whether the teacher shared the mask)."""
    layers = [int(k) for k in layers]
    depth = len(teacher_blocks(teacher_core(teacher)))
    if not layers or min(layers) < 1 or max(layers) > depth:
        raise ValueError(f"teacher layers must be block numbers in 1..{depth} (the teacher's depth), got {layers}")
    kwargs = dict(stop_after=max(layers), image_mean=image_mean, image_std=image_std)
    masks = teacher_masks_like_mae(teacher)
    shared = noise is not None and masks and teacher_grid(teacher) == tuple(grid)
    takes_ratio = "mask_ratio" in inspect.signature(teacher_core(teacher).forward).parameters  # hf-mae's encoders
    if shared:
        kwargs["noise"] = noise
    elif masks:  # every patch, in order (transformers' ViTMAE shuffles even at ratio 0 unless the noise is sorted)
        rows, cols = teacher_grid(teacher)
        kwargs["noise"] = torch.arange(rows * cols, device=pixel_values.device, dtype=torch.float32).expand(
            pixel_values.shape[0], -1)
    ratio = (mask_ratio if mask_ratio is not None else 0.0) if shared else 0.0
    if takes_ratio and masks:
        kwargs["mask_ratio"] = ratio
    with config_mask_ratio(teacher, None if takes_ratio or not masks else ratio):
        features = teacher_forward(teacher, pixel_values, **kwargs)
    tokens = []
    for k in layers:
        hidden = features.hidden_states[k - 1]
        if shared:
            if hidden.shape[1] != 1 + ids_keep.shape[1]:
                raise ValueError(
                    f"the teacher kept {hidden.shape[1] - 1} patches under the shared noise but the student "
                    f"{ids_keep.shape[1]}: give the teacher the student's mask_ratio"
                )
        else:
            patches = gather_tokens(features.patch_tokens(hidden, grid), ids_keep)
            hidden = torch.cat([hidden[:, :1], patches], dim=1)
        tokens.append(hidden)
    return tokens, shared


# ---------------------------------------------------------------------------------------------------------------
# Targets


def reconstruction_target(
    kind: str,
    pixel_values: torch.Tensor,
    patch_size,
    *,
    norm_pix: bool = False,
    hog_cell_size: int = 8,
    hog_bins: int = 9,
    teacher_features: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The per-patch target (batch, N, dim) of ``kind``: ``"pixels"`` (MAE's, normalised per patch if
    ``norm_pix``), ``"hog"`` (MaskFeat / DMJD histograms) or ``"teacher"`` (``teacher_features(pixel_values)``, a
    frozen or EMA teacher's patch features, computed without gradients)."""
    if kind == "pixels":
        return pixel_target(pixel_values, patch_size, norm_pix)
    if kind == "hog":
        return hog_target(pixel_values, patch_size, hog_cell_size, hog_bins)
    if kind == "teacher":
        if teacher_features is None:
            raise ValueError('reconstruction_target("teacher", ...) needs teacher_features (pixel_values -> features)')
        with torch.no_grad():
            return teacher_features(pixel_values).detach()
    raise ValueError(f"kind must be one of {TARGET_KINDS}, got {kind!r}")


__all__ = [
    "TeacherFeatures",
    "build_frozen_teacher",
    "check_teacher_fields",
    "resize_token_grid",
    "teacher_blocks",
    "teacher_forward",
    "teacher_grid",
    "teacher_masks_like_mae",
    "teacher_visible_tokens",
    "teacher_width",
    "teacher_vision_config",
    "described_teacher_config",
    "MomentumSchedule",
    "EMATeacher",
    "EMATeacherMixin",
    "FrozenTeacherMixin",
    "build_auto_model",
    "freeze",
    "parameters_to_buffers",
    "reconstruction_target",
]



# ---------------------------------------------------------------------------------------------------------------
# Checking a teacher instance (distillation methods: MaskAlign, Hybrid Distill)


def teacher_vision_config(teacher: nn.Module):
    """The config of a ViT-like teacher's image encoder (:func:`teacher_core`: CLIPModel's ``vision_model``, else the
    model's own); TypeError when it is no such encoder (no ``hidden_size`` / ``num_hidden_layers`` / ``patch_size``),
    so a wrong instance fails at construction rather than at the first forward."""
    config = getattr(teacher_core(teacher), "config", None) if isinstance(teacher, nn.Module) else None
    if not all(hasattr(config, name) for name in ("hidden_size", "num_hidden_layers", "patch_size")):
        raise TypeError(
            "a teacher must be a Hugging Face ViT-like image encoder (ViTModel / DINO, CLIPVisionModel, CLIPModel, "
            f"ViTMAEModel, hf-mae's MAEModel) with hidden_size, num_hidden_layers and patch_size, got "
            f"{type(teacher).__name__}"
        )
    return config


def described_teacher_config(config, prefix: str = "teacher"):
    """The config of the image encoder that the ``<prefix>_*`` fields describe, read without building the model:
    from ``<prefix>_config`` (a dict), else from a *local folder* ``<prefix>_name_or_path`` (its config.json; e.g.
    ``compare_methods --teacher``'s CIFAR teachers). None for a Hub id (reading it would mean a download, or a long
    wait offline: the config's own size fields are trusted then) and when nothing is set. CLIP's vision part for a
    CLIP config."""
    settings, name = getattr(config, f"{prefix}_config"), getattr(config, f"{prefix}_name_or_path")
    if settings is not None:
        settings = dict(settings)
        described = AutoConfig.for_model(settings.pop("model_type"), **settings)
    elif name is not None and os.path.isdir(name):
        described = AutoConfig.from_pretrained(name)
    else:
        return None
    return getattr(described, "vision_config", described)
