"""RetroMAE: pre-training a retrieval-oriented language model with a masked auto-encoder (Xiao et al., EMNLP 2022).

An encoder (any transformers ``AutoModelForMaskedLM``, BERT family) reads the text with 30% of its words masked
(whole words, BERT's 80/10/10 corruption) and is trained with the usual MLM loss; its last-layer [CLS] state h_cls is
the sentence embedding. A one-layer "enhanced decoder" then reconstructs the *whole* original text from h_cls and a
heavily masked view of it:
- keys / values: H1 = [h_cls, Emb(x_2), ..., Emb(x_L)] (the encoder's embedding module on the original, unmasked
  ids; position 0 replaced by h_cls);
- queries: Q = pos_emb(1..L) + h_cls (every position asks for its token, carrying only its position and h_cls);
- a per-row attention mask (batch, L, L): row i sees a freshly sampled whole-word set covering 50% of the ordinary
  tokens, the special tokens (so always h_cls), never token i itself, never padding;
- labels: every original token except the special ones ([CLS], [SEP]), predicted with the encoder's own MLM head.
Loss = decoder CE + encoder MLM CE (1 : 1). The decoder is one BERT layer whose queries and keys/values are separate
inputs: transformers' own ``BertAttention(is_cross_attention=True)`` (query / key / value Linears, residual and
LayerNorm on the query stream) + ``BertIntermediate`` + ``BertOutput`` (the feed-forward), sized by the encoder's
config, exactly the layer of RetroMAE's ``BertLayerForDecoder``.

Masks are drawn by the processor (:class:`RetroMAEProcessor`, the official collator's job): ``processor(texts,
for_pretraining=True, generator=g)`` returns ``input_ids`` (corrupted), ``attention_mask``, ``labels``,
``decoder_input_ids`` (original), ``decoder_attention_mask`` (batch, L, L) and ``decoder_labels``; the model is a
function of them (a fixed generator fixes the masks and the output).

Departures from the paper and its code (``staoxiao/RetroMAE``):
- whole-word masks are prefixes of one random word ranking (``masking.whole_word_masks``: the prefix closest to the
  ratio); transformers' collator skips words that overshoot the budget instead. Same expected ratio.
- every decoder row draws its own visible set; the official collator draws ``min(L, 256)`` sets per text and gives
  each row one of them at random (with replacement), so rows of long texts share sets. The distribution per row is
  the same.
- the encoder's saved form: ``save_encoder`` writes the ``AutoModelForMaskedLM`` with the tokenizer and
  sentence-transformers files (CLS pooling); the official code saves the masked LM alone.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.bert.modeling_bert import BertAttention, BertIntermediate, BertOutput
from transformers.utils import ModelOutput

from .base import check_choice, check_rate
from .losses import token_cross_entropy
from .masking import mlm_corruption, whole_word_masks
from .text import (
    BERT_BASE_CONFIG, MINILM, MINILM_HUB_ID, MINILM_L6_CONFIG, TINY_BERT_CONFIG, TextEncoderConfig, TextPreTrainedModel,
    TextProcessor, build_masked_lm, check_mask_token, check_token_inputs, mlm_head, pool, save_encoder,
)

DECODER_QUERIES = ("position", "embeddings")


class RetroMAEConfig(TextEncoderConfig):
    r"""Configuration of a RetroMAE model: the backbone fields of ``TextEncoderConfig`` (``encoder_name_or_path`` /
    ``encoder_config``, ``tokenizer_name_or_path``, ``max_length``, ``pooling`` = "cls") plus

    encoder_mask_ratio: share of the ordinary tokens the encoder's whole-word mask covers (paper: 0.3).
    decoder_mask_ratio: share of the ordinary tokens hidden from each decoder row (paper: 0.5); the rest, the
        special tokens and never the row itself, is the row's visible set.
    decoder_query: ``"position"`` (RetroMAE: Q = pos_emb + h_cls) or ``"embeddings"`` (DupMAE's code: the encoder's
        embedding module applied to h_cls at every position: + position + token type, then LayerNorm).
    mask_token_share, random_token_share: BERT's corruption of the encoder's masked tokens (0.8 [MASK], 0.1 random,
        the rest unchanged), as transformers' collator does.
    """

    model_type = "retromae"

    encoder_mask_ratio: float = 0.3
    decoder_mask_ratio: float = 0.5
    decoder_query: str = "position"
    mask_token_share: float = 0.8
    random_token_share: float = 0.1

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_rate("encoder_mask_ratio", self.encoder_mask_ratio, allow_zero=False)
        check_rate("decoder_mask_ratio", self.decoder_mask_ratio)
        check_choice("decoder_query", self.decoder_query, DECODER_QUERIES)
        check_rate("mask_token_share", self.mask_token_share, closed=True)
        check_rate("random_token_share", self.random_token_share, closed=True)
        if self.mask_token_share + self.random_token_share > 1.0:
            raise ValueError(f"mask_token_share + random_token_share must be <= 1, got {self.mask_token_share} + "
                             f"{self.random_token_share}")

    @property
    def mask_ratio(self) -> float:  # what --mask-ratio and the contract suite read
        return self.encoder_mask_ratio


# ---------------------------------------------------------------------------------------------------------------
# Processor: tokenizer + RetroMAE's collator


def decoder_attention_masks(word_ids: torch.Tensor, attention_mask: torch.Tensor, ratio: float,
                            generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, L, L) long: row i of text b may attend to column j (1) or not (0). Each row hides its own whole-word
    sample of ``ratio`` of the ordinary tokens (``whole_word_masks`` on a fresh ranking per row, or on ``noise``
    (batch, L, L)), always hides token i itself and padding, and always shows the special tokens (position 0: h_cls)."""
    batch, length = word_ids.shape
    rows = word_ids.repeat_interleave(length, dim=0)  # (batch * L, L): one ranking per row
    flat_noise = None if noise is None else noise.reshape(batch * length, length)
    hidden = whole_word_masks(rows, ratio, generator=generator, noise=flat_noise)[0].view(batch, length, length)
    hidden = hidden | torch.eye(length, dtype=torch.bool, device=word_ids.device).unsqueeze(0)
    visible = ~hidden & attention_mask.bool().unsqueeze(1)
    return visible.long()


class RetroMAEProcessor(TextProcessor):
    """The tokenizer plus RetroMAE's collator (see :class:`~hf_mae.modeling.text.TextProcessor` for the calls).

    ``processor(texts, for_pretraining=True, generator=g)``: ``input_ids`` (whole-word masked at
    ``encoder_mask_ratio``, 80/10/10), ``attention_mask``, ``labels`` (the original ids where masked, -100
    elsewhere), ``decoder_input_ids`` (the original ids), ``decoder_attention_mask`` (batch, L, L) (see
    :func:`decoder_attention_masks`) and ``decoder_labels`` (the original ids of the ordinary tokens, -100 at the
    special and padding tokens)."""

    def __init__(self, tokenizer=None, max_length: int = 512, encoder_mask_ratio: float = 0.3,
                 decoder_mask_ratio: float = 0.5, mask_token_share: float = 0.8, random_token_share: float = 0.1,
                 **kwargs):
        check_rate("encoder_mask_ratio", encoder_mask_ratio, allow_zero=False)
        check_rate("decoder_mask_ratio", decoder_mask_ratio)
        self.encoder_mask_ratio, self.decoder_mask_ratio = encoder_mask_ratio, decoder_mask_ratio
        self.mask_token_share, self.random_token_share = mask_token_share, random_token_share
        super().__init__(tokenizer, max_length=max_length, **kwargs)
        if tokenizer is not None:
            check_mask_token(tokenizer)

    @classmethod
    def from_model_config(cls, config, **settings):
        settings = {"encoder_mask_ratio": config.encoder_mask_ratio, "decoder_mask_ratio": config.decoder_mask_ratio,
                    "mask_token_share": config.mask_token_share, "random_token_share": config.random_token_share,
                    **settings}
        return super().from_model_config(config, **settings)

    def pretraining_inputs(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        input_ids, attention_mask, word_ids = batch["input_ids"], batch["attention_mask"], batch["word_ids"]
        mask_id = check_mask_token(self.tokenizer)
        encoder_mask = whole_word_masks(word_ids, self.encoder_mask_ratio, generator=generator)[0]
        corrupted, labels = mlm_corruption(input_ids, encoder_mask, mask_id, len(self.tokenizer), generator=generator,
                                           mask_share=self.mask_token_share, random_share=self.random_token_share)
        return {
            "input_ids": corrupted,
            "attention_mask": attention_mask,
            "labels": labels,
            "decoder_input_ids": input_ids,
            "decoder_attention_mask": decoder_attention_masks(word_ids, attention_mask, self.decoder_mask_ratio,
                                                              generator=generator),
            "decoder_labels": input_ids.masked_fill(word_ids < 0, -100),
        }


# ---------------------------------------------------------------------------------------------------------------
# Model


@dataclass
class RetroMAEForPreTrainingOutput(ModelOutput):
    """
    loss: decoder CE + encoder MLM CE (+ DupMAE's weighted bag-of-words loss).
    logits: (batch, L, vocab) the decoder's predictions of every original token.
    encoder_logits: (batch, L, vocab) the encoder's MLM predictions on the masked input.
    decoder_loss, encoder_loss: the two cross-entropies (scalars); bow_loss: DupMAE's bag-of-words loss.
    sentence_embedding: (batch, hidden) the encoder's last-layer [CLS] state h_cls.
    hidden_states, attentions: the encoder's, when asked.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    encoder_logits: torch.Tensor | None = None
    decoder_loss: torch.Tensor | None = None
    encoder_loss: torch.Tensor | None = None
    bow_loss: torch.Tensor | None = None
    sentence_embedding: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class RetroMAEDecoderLayer(nn.Module):
    """The enhanced decoder: one BERT layer with separate query and key/value inputs (transformers' BERT classes,
    sized by the encoder's config): cross-attention of ``query`` over ``key_value`` under ``attention_mask``, the
    residual and LayerNorm on the query stream, then BERT's feed-forward."""

    def __init__(self, encoder_config):
        super().__init__()
        self.attention = BertAttention(encoder_config, is_cross_attention=True)
        self.intermediate = BertIntermediate(encoder_config)
        self.output = BertOutput(encoder_config)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor, attention_mask: torch.Tensor | None = None):
        attended, weights = self.attention(query, encoder_hidden_states=key_value, encoder_attention_mask=attention_mask)
        return self.output(self.intermediate(attended), attended), weights


class RetroMAEPreTrainedModel(TextPreTrainedModel):
    config_class = RetroMAEConfig
    base_model_prefix = "retromae"


class RetroMAEModel(RetroMAEPreTrainedModel):
    """The encoder alone (``AutoModel``): ``last_hidden_state`` (batch, L, hidden) and ``pooler_output`` (batch,
    hidden), the sentence embedding (``config.pooling``: the [CLS] state for RetroMAE). Holds the whole
    ``AutoModelForMaskedLM`` as ``encoder`` (its MLM head is the decoder's too); nothing is masked."""

    _can_record_outputs = {"hidden_states": "BertLayer", "attentions": "BertSelfAttention"}  # the backbone's own

    def __init__(self, config: RetroMAEConfig, warm_start: bool = True):
        super().__init__(config)
        self.encoder = build_masked_lm(config)
        self.post_init()
        if warm_start:
            self.warm_start(self.encoder)

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, output_hidden_states=None,
                output_attentions=None, return_dict=None, **kwargs) -> BaseModelOutputWithPooling:
        """input_ids, attention_mask: (batch, L), e.g. ``processor(texts, return_tensors="pt")``."""
        check_token_inputs(input_ids, attention_mask, self.encoder.config.vocab_size)
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        out = self.encoder.base_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True,
                                      output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                                      **extra)
        pooled = pool(out.last_hidden_state, attention_mask, self.config.pooling)
        result = BaseModelOutputWithPooling(last_hidden_state=out.last_hidden_state, pooler_output=pooled,
                                            hidden_states=out.hidden_states, attentions=out.attentions)
        return result if return_dict is not False else result.to_tuple()

    def save_encoder(self, directory, tokenizer=None):
        """The backbone as a plain transformers + sentence-transformers folder (``text.save_encoder``)."""
        return save_encoder(self.encoder, directory, tokenizer, pooling=self.config.pooling,
                            max_length=self.config.max_length)


class RetroMAEForPreTraining(RetroMAEPreTrainedModel):
    """Encoder MLM + the enhanced decoder's reconstruction from h_cls (see the module docstring).

    forward(input_ids, attention_mask, labels, decoder_input_ids, decoder_attention_mask, decoder_labels): the
    processor's pre-training inputs (``processor(texts, for_pretraining=True)``). ``save_encoder(dir, tokenizer)``
    writes the trained encoder for ``AutoModel`` / ``SentenceTransformer``."""

    encoder_class = RetroMAEModel  # the base model class (DupMAE's adds its dual representation)

    def __init__(self, config: RetroMAEConfig):
        super().__init__(config)
        self.retromae = self.encoder_class(config, warm_start=False)
        self.decoder = RetroMAEDecoderLayer(self.retromae.encoder.config)
        self.post_init()
        self.warm_start(self.retromae.encoder)

    def save_encoder(self, directory, tokenizer=None):
        return self.retromae.save_encoder(directory, tokenizer)

    def decoder_queries(self, h_cls: torch.Tensor, length: int) -> torch.Tensor:
        """(batch, 1, hidden) h_cls -> (batch, L, hidden) queries (``config.decoder_query``)."""
        embeddings = self.retromae.encoder.base_model.embeddings
        if self.config.decoder_query == "embeddings":
            return embeddings(inputs_embeds=h_cls.expand(-1, length, -1))
        positions = torch.arange(length, device=h_cls.device)
        if getattr(embeddings, "padding_idx", None) is not None:  # RoBERTa counts positions from padding_idx + 1
            positions = positions + embeddings.padding_idx + 1
        return embeddings.position_embeddings(positions).unsqueeze(0) + h_cls

    def decode(self, h_cls: torch.Tensor, decoder_input_ids: torch.Tensor, decoder_attention_mask: torch.Tensor):
        """The enhanced decoder's (batch, L, vocab) logits from h_cls (batch, 1, hidden)."""
        length = decoder_input_ids.shape[1]
        embedded = self.retromae.encoder.base_model.embeddings(input_ids=decoder_input_ids)
        key_value = torch.cat([h_cls, embedded[:, 1:]], dim=1)
        query = self.decoder_queries(h_cls, length)
        # (batch, 1, L, L) additive: 0 where a row may look, the dtype's minimum elsewhere
        blocked = (decoder_attention_mask == 0).unsqueeze(1)
        additive = torch.zeros(blocked.shape, dtype=query.dtype, device=query.device)
        additive = additive.masked_fill(blocked, torch.finfo(query.dtype).min)
        hidden, _ = self.decoder(query, key_value, additive)
        return mlm_head(self.retromae.encoder)(hidden)

    def check_pretraining_inputs(self, input_ids, attention_mask, labels, decoder_input_ids, decoder_attention_mask,
                                 decoder_labels) -> None:
        vocab = self.retromae.encoder.config.vocab_size
        check_token_inputs(input_ids, attention_mask, vocab)
        missing = [name for name, value in (("labels", labels), ("decoder_input_ids", decoder_input_ids),
                                            ("decoder_attention_mask", decoder_attention_mask),
                                            ("decoder_labels", decoder_labels)) if value is None]
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs the processor's pre-training inputs; missing {missing} (build them with "
                "processor(texts, return_tensors='pt', for_pretraining=True))"
            )
        check_token_inputs(decoder_input_ids, None, vocab, name="decoder_input_ids")
        batch, length = input_ids.shape
        for name, value, shape in (("labels", labels, (batch, length)), ("decoder_input_ids", decoder_input_ids,
                                   (batch, length)), ("decoder_labels", decoder_labels, (batch, length)),
                                   ("decoder_attention_mask", decoder_attention_mask, (batch, length, length))):
            if tuple(value.shape) != shape:
                raise ValueError(f"{name} must have shape {shape} (input_ids is {tuple(input_ids.shape)}), got "
                                 f"{tuple(value.shape)}")

    def forward(self, input_ids=None, attention_mask=None, labels=None, decoder_input_ids=None,
                decoder_attention_mask=None, decoder_labels=None, output_hidden_states=None, output_attentions=None,
                return_dict=None, **kwargs) -> RetroMAEForPreTrainingOutput:
        self.check_pretraining_inputs(input_ids, attention_mask, labels, decoder_input_ids, decoder_attention_mask,
                                      decoder_labels)
        encoded = self.retromae.encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                                        output_attentions=output_attentions, return_dict=True)
        last = encoded.hidden_states[-1]
        h_cls = last[:, :1]
        encoder_loss = token_cross_entropy(encoded.logits, labels)
        logits = self.decode(h_cls, decoder_input_ids, decoder_attention_mask)
        decoder_loss = token_cross_entropy(logits, decoder_labels)
        loss = decoder_loss + encoder_loss
        bow_loss = self.extra_loss(encoded.logits, decoder_input_ids, decoder_labels)
        if bow_loss is not None:
            loss = loss + self.config.bow_loss_weight * bow_loss
        result = RetroMAEForPreTrainingOutput(
            loss=loss, logits=logits, encoder_logits=encoded.logits, decoder_loss=decoder_loss,
            encoder_loss=encoder_loss, bow_loss=bow_loss, sentence_embedding=h_cls[:, 0],
            hidden_states=encoded.hidden_states if output_hidden_states else None, attentions=encoded.attentions,
        )
        return result if return_dict is not False else result.to_tuple()

    def extra_loss(self, encoder_logits, decoder_input_ids, decoder_labels):
        """A further loss term (DupMAE's bag of words); None for RetroMAE."""
        return None


RETROMAE_TINY = dict(encoder_config=dict(TINY_BERT_CONFIG), tokenizer_name_or_path=MINILM, max_length=128)

METHOD = dict(
    name="retromae",
    paper=(
        "RetroMAE: Pre-Training Retrieval-oriented Language Models Via Masked Auto-Encoder (Xiao et al., EMNLP "
        "2022), arXiv:2205.12035"
    ),
    config_class=RetroMAEConfig,
    model_classes={"base": RetroMAEModel, "pretraining": RetroMAEForPreTraining},
    processor="RetroMAEProcessor",
    modality="text",
    presets={
        # a tiny random BERT (64-d, 2 layers, 2 heads) over the real uncased WordPiece vocabulary (all-MiniLM-L6-v2's
        # tokenizer; nothing downloaded here), texts of at most 128 tokens
        "retromae-tiny": RETROMAE_TINY,
        # the paper: bert-base-uncased warm start, encoder ratio 0.3, decoder ratio 0.5, 512 tokens (Wikipedia +
        # BookCorpus; 150 for MS MARCO passages)
        "retromae-bert-base-uncased": dict(encoder_name_or_path="bert-base-uncased", encoder_config=dict(BERT_BASE_CONFIG),
                                           max_length=512),
        # warm-started from all-MiniLM-L6-v2 (a sentence-embedding fine-tune without an MLM head: the head is new)
        "retromae-minilm-l6": dict(encoder_name_or_path=MINILM_HUB_ID, encoder_config=dict(MINILM_L6_CONFIG),
                                   max_length=256),
    },
    # the paper's recipe: AdamW, lr 1e-4 at batch 8 x 32 = 256 (so base lr 1e-4 per 256), weight decay 0.01,
    # betas transformers' Trainer's (0.9, 0.999)
    pretrain_base_lr=1e-4,
    pretrain_batch=256,
    pretrain_betas=(0.9, 0.999),
    pretrain_weight_decay=0.01,
    exports=["RetroMAEDecoderLayer", "RetroMAEForPreTrainingOutput", "decoder_attention_masks"],
)
