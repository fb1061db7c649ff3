"""SimMIM: a Simple Framework for Masked Image Modeling (Xie et al., CVPR 2022).

The method, as in the paper's Section 3 and microsoft/SimMIM ``models/simmim.py``:
1. hide a random ``mask_ratio`` (0.6) of the image in ``mask_patch_size`` cells (32 px: 2x2 patches of 16 px);
2. the ViT encoder sees **every** patch: a hidden patch's embedding is replaced by one learned ``mask_token``
   (``x * (1 - m) + mask_token * m``) before the cls token and the positions are added;
3. a linear head maps each encoder token back to its pixels: a 1x1 conv to ``encoder_stride**2 * channels`` and a
   pixel shuffle (``encoder_stride`` = ``patch_size``), giving a full image (batch, C, H, W);
4. the loss is the L1 distance on the hidden pixels only, divided by their count and the channel count.

``use_mto=True`` adds the masked token optimisation plug-in (MTO, Choi et al., ECCV 2024: a recalibration of the
visible tokens' attention on mask tokens and three extra losses; ``masked_token_optimization.py``, and ``mto.py``
for the method under its own name). Off by default, when this file computes exactly what it did without it.

Numerically this is transformers' ``ViTForMaskedImageModeling`` (learned absolute positions, pre-norm ViT blocks)
for the same weights and ``bool_masked_pos`` (see ``hf-mae convert vit-mim``). The official ViT-B recipe uses
relative position biases instead of absolute positions; hf-mae keeps transformers' absolute ones.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

import torch
from torch import nn
from transformers import initialization as init
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .base import MaskedModelPreTrainedModel, ViTImageConfig, check_choice
from .embeddings import PatchEmbedding2D, interpolate_pos_embed, to_2tuple
from .heads import ImageClassifierMixin
from .layers import Attention, TransformerBlock, build_encoder_blocks, run_blocks
from .masked_token_optimization import MaskedTokenOptimizationMixin, mto_objectives, recalibration_bias
from .masking import GroupedRandomMaskGenerator, check_mask_ratio, feature_mask_ratio, upsample_grid_mask
from .outputs import MaskedEncoderOutput, MaskedPreTrainingOutput, pool_tokens
from .targets import patch_statistics, patchify, unpatchify

SimMIMModelOutput = MaskedEncoderOutput


@dataclass
class SimMIMForPreTrainingOutput(MaskedPreTrainingOutput):
    """
    loss: scalar L1 loss over the hidden pixels (plus MTO's weighted terms with ``use_mto``).
    logits: (batch, channels, H, W) reconstructed pixels (transformers calls them ``reconstruction``).
    mask: (batch, num_patches), 1 = replaced by the mask token. ids_restore: None (the encoder keeps the order).
    hidden_states, attentions: per layer, over 1 + num_patches tokens.
    reconstruction_loss, mto_sparsity_loss, mto_entropy_loss, mto_singularity_loss: with ``use_mto`` only, the
        masked L1 and MTO's unweighted L_spa, L_e, L_r (see masked_token_optimization.py); None otherwise.
    """

    reconstruction_loss: torch.Tensor | None = None
    mto_sparsity_loss: torch.Tensor | None = None
    mto_entropy_loss: torch.Tensor | None = None
    mto_singularity_loss: torch.Tensor | None = None

    @property
    def reconstruction(self) -> torch.Tensor:
        return self.logits


class SimMIMConfig(ViTImageConfig, MaskedTokenOptimizationMixin):
    r"""Configuration of a SimMIM ViT. Defaults are the paper's ViT-B/16 pre-training (192 px, r=0.6, 32-px cells).

    The ViT's fields are :class:`ViTImageConfig`'s, with these differences:
    image_size: an int or (height, width), a multiple of ``mask_patch_size``.
    patch_size: an int (square patches: the pixel-shuffle head needs one stride).
    layer_norm_eps: 1e-6 as the official ViT (transformers' ViT uses 1e-12; ``convert vit-mim`` keeps its value).
    Besides:
    layer_scale_init_value: LayerScale of the encoder blocks (0 = off).
    use_mask_token: build the learned mask token (off in the classifier, which never masks).
    encoder_stride: upsampling factor of the pixel-shuffle head; must equal ``patch_size`` (default: it).
    mask_ratio: fraction of mask cells hidden during pre-training, in [0, 1).
    mask_patch_size: side in pixels of a mask cell, a multiple of ``patch_size``.
    classifier_pooling: "mean" (average of the tokens, then fc_norm: SimMIM fine-tuning) or "cls".
    norm_pix_loss: regress each patch's pixels normalised to zero mean / unit variance (MAE's target) instead of the
        raw pixels (the paper's). hf-mae's option, off by default.
    use_mto, mto_recalibration, mto_sparsity_weight, mto_entropy_weight, mto_singularity_weight: the masked token
        optimisation plug-in (:class:`MaskedTokenOptimizationMixin`), off by default; the ``mto`` method turns it on.
    """

    model_type = "simmim"

    image_size: int | list[int] | tuple[int, int] = 192
    patch_size: int = 16
    layer_scale_init_value: float = 0.0
    use_mask_token: bool = True
    encoder_stride: int | None = None
    mask_ratio: float = 0.6
    mask_patch_size: int = 32
    classifier_pooling: str = "mean"
    norm_pix_loss: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if isinstance(self.patch_size, (list, tuple)):
            height, width = to_2tuple(self.patch_size)
            if height != width:
                raise ValueError(f"patch_size must be square for SimMIM's pixel-shuffle head, got {self.patch_size!r}")
            self.patch_size = height
        if self.encoder_stride is None:
            self.encoder_stride = self.patch_size
        if self.encoder_stride != self.patch_size:
            raise ValueError(
                f"encoder_stride ({self.encoder_stride}) must equal patch_size ({self.patch_size}) so that the head "
                "reconstructs an image of the input's size"
            )
        if self.mask_patch_size % self.patch_size:
            raise ValueError(
                f"mask_patch_size {self.mask_patch_size} must be a multiple of patch_size {self.patch_size}"
            )
        image = to_2tuple(self.image_size)
        if image[0] % self.mask_patch_size or image[1] % self.mask_patch_size:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by mask_patch_size {self.mask_patch_size}"
            )
        check_mask_ratio(self.mask_ratio)
        check_choice("classifier_pooling", self.classifier_pooling, ("mean", "cls"))

    @property
    def mask_unit(self) -> int:
        """Patches per side of a mask cell."""
        return self.mask_patch_size // self.patch_size

    @property
    def mask_grid_size(self) -> tuple[int, int]:
        """The (rows, cols) grid of mask cells: the shape ``noise`` is drawn over."""
        rows, cols = self.grid_size
        return rows // self.mask_unit, cols // self.mask_unit


class SimMIMEmbeddings(nn.Module):
    """Patch embedding, mask token on hidden patches, cls token and learned positions (ViT's ``ViTEmbeddings``)."""

    def __init__(self, config: SimMIMConfig, use_mask_token: bool = True):
        super().__init__()
        self.patch_embeddings = PatchEmbedding2D(
            config.image_size, config.patch_size, config.num_channels, config.hidden_size
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if use_mask_token else None
        num_positions = 1 + self.patch_embeddings.num_patches
        self.position_embeddings = nn.Parameter(torch.zeros(1, num_positions, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def positions(self, grid) -> torch.Tensor:
        """Position table (1, 1 + rows*cols, hidden), interpolated if ``grid`` is not the native one."""
        if tuple(grid) == self.patch_embeddings.grid_size:
            return self.position_embeddings
        patch_pos = interpolate_pos_embed(self.position_embeddings[:, 1:], self.patch_embeddings.grid_size, grid)
        return torch.cat([self.position_embeddings[:, :1], patch_pos], dim=1)

    def forward(self, pixel_values, grid, mask: torch.Tensor | None = None) -> torch.Tensor:
        """pixel_values (batch, C, H, W), mask (batch, N) 1 = hidden -> tokens (batch, 1 + N, hidden)."""
        patches = self.patch_embeddings(pixel_values)
        if mask is not None:
            hidden = mask.unsqueeze(-1).to(patches.dtype)
            patches = patches * (1.0 - hidden) + self.mask_token.to(patches.dtype) * hidden
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        return self.dropout(torch.cat([cls, patches], dim=1) + self.positions(grid))


class SimMIMPreTrainedModel(MaskedModelPreTrainedModel):
    config_class = SimMIMConfig
    base_model_prefix = "simmim"
    input_modalities = ("image",)
    _no_split_modules = ["TransformerBlock", "SimMIMEmbeddings"]

    @torch.no_grad()
    def _init_weights(self, module):
        """SimMIM's (and ViT's) initialisation: truncated N(0, 0.02) for linears, convs (the patch projection too)
        and tokens."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, SimMIMEmbeddings):
            for token in (module.cls_token, module.mask_token, module.position_embeddings):
                if token is not None:
                    init.trunc_normal_(token, mean=0.0, std=std)
        else:
            super()._init_weights(module)  # norms, LayerScale


class SimMIMModel(SimMIMPreTrainedModel):
    """The SimMIM ViT encoder: every patch goes in, the hidden ones as the mask token.

    ``use_mask_token`` defaults to ``config.use_mask_token``; ``add_final_norm=False`` leaves out the last LayerNorm
    (the mean-pooling classifier normalises after pooling).
    """

    # transformers' output capture: hidden states from the blocks, attention weights from their attention modules
    _can_record_outputs = {"hidden_states": TransformerBlock, "attentions": Attention}

    def __init__(self, config: SimMIMConfig, add_final_norm: bool = True, use_mask_token: bool | None = None):
        super().__init__(config)
        use_mask_token = config.use_mask_token if use_mask_token is None else use_mask_token
        self.embeddings = SimMIMEmbeddings(config, use_mask_token)
        self.layers = build_encoder_blocks(config)
        self.layernorm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if add_final_norm else nn.Identity()
        )
        self.mask_generator = GroupedRandomMaskGenerator(config.mask_unit)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    def make_mask(self, batch, grid, bool_masked_pos, noise, mask_ratio, device) -> torch.Tensor | None:
        """The (batch, N) float mask, 1 = hidden; None when nothing is to be masked."""
        num_patches = grid[0] * grid[1]
        if bool_masked_pos is not None:
            if noise is not None:
                raise ValueError("pass either bool_masked_pos or noise, not both")
            is_tensor = isinstance(bool_masked_pos, torch.Tensor)
            if not is_tensor or tuple(bool_masked_pos.shape) != (batch, num_patches):
                got = tuple(bool_masked_pos.shape) if is_tensor else type(bool_masked_pos).__name__
                raise ValueError(
                    f"bool_masked_pos must be a tensor of shape (batch, num_patches) = {(batch, num_patches)}, "
                    f"got {got}"
                )
            return bool_masked_pos.to(device=device, dtype=torch.float32)
        if noise is not None:
            if not isinstance(noise, torch.Tensor) or noise.shape[0] != batch:
                raise ValueError(f"noise must be a tensor of shape (batch, num_mask_units) with batch={batch}")
            return self.mask_generator.from_noise(noise.to(device), mask_ratio, grid).mask
        if mask_ratio == 0.0:
            return None
        return self.mask_generator(batch, num_patches, mask_ratio, grid, device).mask

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        pixel_values: (batch, channels, height, width) float.
        bool_masked_pos: (batch, num_patches) bool, optional: exactly these patches get the mask token.
        noise: (batch, num_mask_units) over the cells of ``config.mask_grid_size``, optional: the
            ``int(units * (1 - mask_ratio))`` cells with the smallest noise stay visible, the others are hidden.
        mask_ratio: default 0.0 (``config.mask_ratio`` with ``noise``): a plain call masks nothing, the same
            features on every call. Pre-training passes ``config.mask_ratio``.
        interpolate_pos_encoding: allow other image sizes (a multiple of ``mask_patch_size`` when masking).
        output_hidden_states, output_attentions, return_dict: as in transformers (captured from the blocks).
        Returns SimMIMModelOutput: last_hidden_state (batch, 1 + num_patches, hidden) in patch order,
        mask (batch, num_patches) 1 = hidden, ids_restore None, pooler_output (batch, hidden): the mean of the patch
        tokens (the cls token with ``classifier_pooling="cls"``).
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        grid = self.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=interpolate_pos_encoding)
        mask_ratio = feature_mask_ratio(mask_ratio, self.config, noise)
        batch = pixel_values.shape[0]
        mask = self.make_mask(batch, grid, bool_masked_pos, noise, mask_ratio, pixel_values.device)
        if mask is not None and self.embeddings.mask_token is None:
            raise ValueError("this encoder was built without a mask token (use_mask_token=False); it cannot mask")

        bias = None
        if mask is not None and self.config.use_mto:  # MTO's weight recalibration (None when gamma is 1)
            # float32 whatever the model's dtype: eager attention promotes the logits to it, sdpa accepts it
            bias = recalibration_bias(mask, self.config.mto_recalibration, num_prefix_tokens=1)
            if bias is not None and "flash" in str(self.config._attn_implementation):
                raise ValueError(
                    f"MTO's weight recalibration (mto_recalibration={self.config.mto_recalibration}) is an attention "
                    f"bias, which attn_implementation={self.config._attn_implementation!r} cannot take: use 'eager' or "
                    "'sdpa', or mto_recalibration=1.0"
                )
        hidden, _, _ = run_blocks(self.layers, self.embeddings(pixel_values, grid, mask), attention_mask=bias)
        hidden = self.layernorm(hidden)
        if mask is None:
            mask = torch.zeros(batch, grid[0] * grid[1], device=pixel_values.device)
        return SimMIMModelOutput(
            last_hidden_state=hidden, mask=mask, pooler_output=pool_tokens(hidden, self.config.classifier_pooling)
        )


def masked_l1(pixel_values: torch.Tensor, reconstruction: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """SimMIM's loss: ``sum(|x - x_hat| * m) / (sum(m) + 1e-5) / channels``.

    pixel_values, reconstruction: (batch, C, H, W); pixel_mask: (batch, 1, H, W), 1 = hidden pixel.
    """
    error = (pixel_values.float() - reconstruction.float()).abs()
    pixel_mask = pixel_mask.to(error.dtype)
    return (error * pixel_mask).sum() / (pixel_mask.sum() + 1e-5) / pixel_values.shape[1]


class SimMIMForPreTraining(SimMIMPreTrainedModel):
    """SimMIM encoder + linear pixel-shuffle head with the masked L1 loss."""

    def __init__(self, config: SimMIMConfig):
        super().__init__(config)
        self.simmim = SimMIMModel(config, use_mask_token=True)
        stride = config.encoder_stride
        self.decoder = nn.Sequential(
            nn.Conv2d(config.hidden_size, stride**2 * config.num_channels, kernel_size=1),
            nn.PixelShuffle(stride),
        )
        self.post_init()

    def pixel_mask(self, mask: torch.Tensor, image_size) -> torch.Tensor:
        """Patch mask (batch, N) -> pixel mask (batch, 1, H, W) for images of ``image_size`` (H, W)."""
        patch = self.config.patch_size
        grid = (image_size[0] // patch, image_size[1] // patch)
        return upsample_grid_mask(mask, grid, patch).reshape(mask.shape[0], 1, *image_size)

    def norm_pix_statistics(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MAE's norm-pix statistics as images: each patch's mean and std over its pixels and channels, spread over
        the patch, (batch, 1, H, W) each."""
        patch, (height, width) = self.config.patch_size, pixel_values.shape[-2:]
        grid = (height // patch, width // patch)
        stats = patch_statistics(patchify(pixel_values.float(), patch))  # (batch, N, 1) each
        return tuple(unpatchify(stat.expand(-1, -1, patch * patch), patch, grid, 1) for stat in stats)

    def target(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """What the head regresses, (batch, C, H, W): the pixels, or with ``norm_pix_loss`` each patch normalised."""
        if not self.config.norm_pix_loss:
            return pixel_values
        mean, std = self.norm_pix_statistics(pixel_values)
        return (pixel_values.float() - mean) / std

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """Same inputs as :meth:`SimMIMModel.forward`. Returns SimMIMForPreTrainingOutput with the masked L1
        ``loss``, ``logits`` = the reconstruction (batch, channels, H, W) and ``mask`` (batch, num_patches); with
        ``config.use_mto`` the loss adds MTO's weighted terms, reported one by one in the output."""
        asked_attentions = kwargs.get("output_attentions", self.config.output_attentions)
        if self.config.mto_needs_attentions:  # L_spa and L_e read the encoder's attention weights
            kwargs = {**kwargs, "output_attentions": True}
        encoded = self.simmim(
            pixel_values,
            bool_masked_pos=bool_masked_pos,
            noise=noise,
            mask_ratio=self.config.mask_ratio if mask_ratio is None else mask_ratio,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            **kwargs,
        )
        batch, _, height, width = pixel_values.shape
        patch = self.config.patch_size
        tokens = encoded.last_hidden_state[:, 1:]  # (batch, N, hidden) -> (batch, hidden, rows, cols)
        tokens = tokens.transpose(1, 2).reshape(batch, -1, height // patch, width // patch)
        reconstruction = self.decoder(tokens).contiguous()  # the conv keeps the tokens' channels-last strides
        loss = masked_l1(self.target(pixel_values), reconstruction, self.pixel_mask(encoded.mask, (height, width)))
        terms = {}
        if self.config.use_mto:
            with torch.no_grad():  # L_r's data side: the patch embeddings before the mask token, detached
                embedded = self.simmim.embeddings.patch_embeddings(pixel_values)
            extra, terms = mto_objectives(
                self.config, encoded.mask, self.simmim.embeddings.mask_token, embedded, encoded.attentions
            )
            terms["reconstruction"], loss = loss, loss + extra
        output = SimMIMForPreTrainingOutput(
            loss=loss,
            logits=reconstruction,
            mask=encoded.mask,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions if asked_attentions else None,
            reconstruction_loss=terms.get("reconstruction"),
            mto_sparsity_loss=terms.get("sparsity"),
            mto_entropy_loss=terms.get("entropy"),
            mto_singularity_loss=terms.get("singularity"),
        )
        return output

    @torch.no_grad()
    def reconstruct(self, pixel_values: torch.Tensor, output) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(masked_input, reconstruction, pasted)``, each (batch, channels, H, W), in the processor's pixel space:
        the input with hidden pixels zeroed, the head's prediction (norm-pix undone), and the prediction with visible
        pixels pasted back from the input (the contract of :meth:`MAEForPreTraining.reconstruct`)."""
        pixel_values = pixel_values.to(output.logits.dtype)
        hidden = self.pixel_mask(output.mask, pixel_values.shape[-2:]).to(pixel_values.dtype)
        prediction = output.logits
        if self.config.norm_pix_loss:  # undone with each patch's own mean and std, as MAE's reconstruct
            mean, std = self.norm_pix_statistics(pixel_values)
            prediction = (prediction * std + mean).to(prediction.dtype)
        masked_input = pixel_values * (1 - hidden)
        return masked_input, prediction, masked_input + prediction * hidden


class SimMIMForImageClassification(ImageClassifierMixin, SimMIMPreTrainedModel):
    """SimMIM encoder (no masking, no mask token) + linear classifier; pooled by the mean of the tokens + fc_norm
    (``classifier_pooling="mean"``, as SimMIM fine-tunes ViTs) or by the normalised cls token ("cls")."""

    def __init__(self, config: SimMIMConfig):
        super().__init__(config)
        mean = config.classifier_pooling == "mean"
        self.simmim = SimMIMModel(config, add_final_norm=not mean, use_mask_token=False)
        self.build_classifier(config)
        self.post_init()


__all__ = [
    "SimMIMConfig",
    "SimMIMPreTrainedModel",
    "SimMIMModel",
    "SimMIMForPreTraining",
    "SimMIMForImageClassification",
    "SimMIMModelOutput",
    "SimMIMForPreTrainingOutput",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY_ENCODER, VIT  # noqa: E402

METHOD = dict(
    name="simmim",
    paper="SimMIM: a Simple Framework for Masked Image Modeling (Xie et al., CVPR 2022), arXiv:2111.09886",
    config_class=SimMIMConfig,
    model_classes={
        "base": SimMIMModel, "pretraining": SimMIMForPreTraining, "image-classification": SimMIMForImageClassification,
        "masked-image-modeling": SimMIMForPreTraining,  # AutoModelForMaskedImageModeling, as transformers' SimMIM
    },
    processor="MAEImageProcessor",
    # microsoft/SimMIM data/data_simmim.py SimMIMTransform: RandomResizedCrop(scale=(0.67, 1.), ratio=(3/4, 4/3)) with
    # torchvision's default (bilinear) interpolation, RandomHorizontalFlip()
    pretrain_augmentation=dict(crop_scale=(0.67, 1.0), crop_ratio=(3 / 4, 4 / 3), resample="bilinear"),
    # microsoft/SimMIM simmim_pretrain__vit_base__img224__800ep.yaml + main_simmim.py: BASE_LR 1e-4 scaled by
    # batch / 512 at batch 2048 (4e-4, i.e. 5e-5 per 256 images), AdamW betas (0.9, 0.999)
    pretrain_base_lr=5e-5, pretrain_batch=2048, pretrain_betas=(0.9, 0.999),
    presets={
        # mae-tiny's encoder; 8-px mask cells (2x2 patches) on 32-px images, as 32-px cells on 16-px patches
        "simmim-tiny": dict(TINY_ENCODER, mask_patch_size=8),
        # the paper's ViT-B/16 pre-training: 192 px, r=0.6, 32-px mask cells
        "simmim-vit-base-patch16": dict(
            image_size=192, patch_size=16, mask_ratio=0.6, mask_patch_size=32, **VIT["base"]
        ),
    },
)
