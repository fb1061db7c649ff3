"""Callbacks for ``transformers.Trainer``.

:class:`OptimizerStepHookCallback` gives a Trainer run what ``hf-mae pretrain`` does by hand: it calls
``model.after_optimizer_step(step)`` (``teachers.EMATeacherMixin``: HPM, LUT and every method with an EMA teacher)
once per real optimiser step. Trainer fires ``on_step_end`` right after ``optimizer.step()``, the scheduler step and
``state.global_step += 1``, and only on the micro-batch that completes an accumulated step (the others fire
``on_substep_end``), so with ``gradient_accumulation_steps=k`` the teacher moves once per ``k`` micro-batches.
Without the callback such a model falls back to moving its teacher in every training forward, i.e. once per
micro-batch.

:class:`TrainingProgressCallback` tells a model how far training has gone: it calls
``model.set_training_progress(global_step / max_steps)`` (FMAE-IAT's DANN ramp of the reversal strength) at the
start and after every optimiser step.
"""

from __future__ import annotations

from torch import nn
from transformers import TrainerCallback
from transformers.modeling_utils import unwrap_model


def _fsdp1_wrapped(model: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # a torch built without distributed
        return False
    return any(isinstance(module, FullyShardedDataParallel) for module in model.modules())


class OptimizerStepHookCallback(TrainerCallback):
    """Calls ``model.after_optimizer_step(state.global_step)`` after every optimiser step of a ``Trainer``.

    ``Trainer(model, args, ..., callbacks=[OptimizerStepHookCallback()])``. A model without the hook is left alone,
    so the callback is safe on any model (``hf-mae finetune`` always adds it). At ``on_train_begin`` it calls the
    hook with the step the run starts (or resumes) at: that moves nothing and hands the teacher to the callback, so
    that micro-batch forwards stop moving it.
    """

    @staticmethod
    def _hook(model: nn.Module | None):
        if model is None:
            return None
        return getattr(unwrap_model(model), "after_optimizer_step", None)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        hook = self._hook(model)
        if hook is not None:
            if _fsdp1_wrapped(model):
                raise ValueError(
                    f"{type(unwrap_model(model)).__name__} has an EMA teacher, which reads the whole student after "
                    "every optimiser step, but FSDP1 keeps the parameters as flat shards; use FSDP2 "
                    "(TrainingArguments(fsdp_config={'fsdp_version': 2, ...}) or `accelerate launch --fsdp_version 2`)"
                )
            hook(state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        hook = self._hook(model)
        if hook is not None:
            hook(state.global_step)


class TrainingProgressCallback(TrainerCallback):
    """Calls ``model.set_training_progress(state.global_step / state.max_steps)`` when training begins (or resumes)
    and after every optimiser step, so the next step runs at that progress. A model without the method is left
    alone (``hf-mae finetune`` always adds the callback)."""

    @staticmethod
    def _set(model: nn.Module | None, state) -> None:
        setter = getattr(unwrap_model(model), "set_training_progress", None) if model is not None else None
        if setter is not None and state.max_steps:
            setter(min(1.0, state.global_step / state.max_steps))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._set(model, state)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._set(model, state)
