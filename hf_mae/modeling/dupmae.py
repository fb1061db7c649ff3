"""DupMAE (RetroMAE v2): a duplex masked auto-encoder (Xiao & Liu, ACL 2023, arXiv:2211.08769).

RetroMAE (see ``retromae.py``) trains the [CLS] embedding: an enhanced decoder rebuilds the text from h_cls. DupMAE
adds a second decoding task for the *ordinary* tokens' embeddings, so that every contextualised embedding carries
the text:
- bag-of-words decoding: the encoder's MLM head maps each ordinary token's last state to the vocabulary, the
  logits are max-pooled over the ordinary positions into one vocabulary vector ``o``, and ``o`` must predict the
  input's bag of words: ``L_bow = -sum_v w_v log softmax(o)_v`` with ``w_v = 1/n`` for every id among the input's
  n ordinary tokens (``losses.bag_of_words_loss``, checked by hand in the tests);
- the [CLS] decoder's queries are the encoder's embedding module applied to h_cls (position + token-type
  embeddings, then LayerNorm: the official ``modeling_duplex.py``), not RetroMAE's pos_emb + h_cls.
Loss = decoder CE + encoder MLM CE + 0.1 * L_bow (``bow_loss_weight``, the official default).

The dual representation (``DupMAEModel``'s ``pooler_output`` when ``representation="dual"``): [CLS] concatenated
with the ordinary tokens' vector "after dimension reduction and aggregation" (the abstract). The paper's exact
reduction is not in the official repository (its fine-tuning code pools [CLS] only) and could not be read here:
**hf-mae's choice**: ``relu(o)`` (the max-pooled vocabulary vector, non-negative as a lexical weight), reduced to
``lexical_dim`` values by the max over ``lexical_dim`` contiguous buckets of the vocabulary, so the two halves are
comparable in size. ``representation="cls"`` gives [CLS] alone, RetroMAE's embedding.

Departures: those of RetroMAE; the reduction above; the exported sentence-transformers folder (``save_encoder``)
pools [CLS] only (sentence-transformers has no module for the lexical half).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .base import check_choice
from .losses import bag_of_words_loss
from .retromae import RETROMAE_TINY, RetroMAEConfig, RetroMAEForPreTraining, RetroMAEModel, RetroMAEProcessor
from .text import BERT_BASE_CONFIG, MINILM_HUB_ID, MINILM_L6_CONFIG, mlm_head

REPRESENTATIONS = ("dual", "cls")


class DupMAEConfig(RetroMAEConfig):
    r"""Configuration of a DupMAE model: RetroMAE's fields (encoder 0.3, decoder 0.5) plus

    bow_loss_weight: weight of the bag-of-words loss (official: 0.1).
    decoder_query: ``"embeddings"`` (DupMAE's code) by default.
    representation: ``"dual"`` ([CLS] + the reduced ordinary-token vector) or ``"cls"`` for ``DupMAEModel``'s
        ``pooler_output``.
    lexical_dim: size of the reduced ordinary-token vector (None: the encoder's hidden size; hf-mae's choice).
    """

    model_type = "dupmae"

    bow_loss_weight: float = 0.1
    decoder_query: str = "embeddings"
    representation: str = "dual"
    lexical_dim: int | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_choice("representation", self.representation, REPRESENTATIONS)
        if not isinstance(self.bow_loss_weight, (int, float)) or self.bow_loss_weight < 0:
            raise ValueError(f"bow_loss_weight must be a number >= 0, got {self.bow_loss_weight!r}")
        if self.lexical_dim is not None and (not isinstance(self.lexical_dim, int) or self.lexical_dim < 1
                                             or self.lexical_dim > self.vocab_size):
            raise ValueError(f"lexical_dim must be None or an int in [1, vocab_size={self.vocab_size}], got "
                             f"{self.lexical_dim!r}")


class DupMAEProcessor(RetroMAEProcessor):
    """RetroMAE's tokenizer + collator: DupMAE's bag of words is read from the same ``decoder_input_ids`` /
    ``decoder_labels`` (the original ordinary tokens)."""


def reduce_lexical(vocabulary_vector: torch.Tensor, size: int) -> torch.Tensor:
    """(batch, V) -> (batch, size): the max over ``size`` contiguous buckets of the vocabulary (the last bucket
    padded with zeros, which never win over the non-negative weights)."""
    batch, vocab = vocabulary_vector.shape
    width = -(-vocab // size)
    padded = F.pad(vocabulary_vector, (0, width * size - vocab))
    return padded.view(batch, size, width).max(dim=-1).values


class DupMAEModel(RetroMAEModel):
    """The encoder (``AutoModel``): ``last_hidden_state`` and ``pooler_output``, the dual representation
    ([CLS] then the reduced lexical vector, ``hidden + lexical_dim`` wide) or [CLS] alone
    (``config.representation``)."""

    config_class = DupMAEConfig

    def lexical_vector(self, attention_mask, hidden: torch.Tensor) -> torch.Tensor:
        """relu of the MLM logits max-pooled over the ordinary tokens, reduced. The ordinary tokens: the attended
        ones but the first and the last ([CLS] ... [SEP], the layout every text processor here writes)."""
        ordinary = attention_mask.bool().clone()
        ordinary[:, 0] = False
        ordinary[torch.arange(len(ordinary)), attention_mask.sum(1).clamp(min=1) - 1] = False
        logits = mlm_head(self.encoder)(hidden).float().masked_fill(~ordinary.unsqueeze(-1), float("-inf"))
        pooled = logits.max(dim=1).values.clamp(min=0).nan_to_num(0.0, neginf=0.0)  # no ordinary token: zeros
        return reduce_lexical(pooled, self.config.lexical_dim or self.config.hidden_size).to(hidden.dtype)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, output_hidden_states=None,
                output_attentions=None, return_dict=None, **kwargs) -> BaseModelOutputWithPooling:
        out = super().forward(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions,
                              return_dict=True)
        if self.config.representation == "dual":
            mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            lexical = self.lexical_vector(mask, out.last_hidden_state)
            out.pooler_output = torch.cat([out.pooler_output, lexical], dim=-1)
        return out if return_dict is not False else out.to_tuple()


class DupMAEForPreTraining(RetroMAEForPreTraining):
    """RetroMAE's two losses + the bag-of-words loss of the encoder's max-pooled MLM logits (``out.bow_loss``)."""

    config_class = DupMAEConfig
    encoder_class = DupMAEModel  # RetroMAE's weight names (``retromae.encoder...``): RetroMAE checkpoints load

    def extra_loss(self, encoder_logits, decoder_input_ids, decoder_labels):
        # the ordinary tokens are exactly the decoder's labelled positions (every token but [CLS]/[SEP]/padding)
        return bag_of_words_loss(encoder_logits, decoder_input_ids, decoder_labels != -100)


METHOD = dict(
    name="dupmae",
    paper=(
        "RetroMAE v2: Duplex Masked Auto-Encoder For Pre-Training Retrieval-Oriented Language Models (Xiao & Liu, "
        "ACL 2023), arXiv:2211.08769"
    ),
    config_class=DupMAEConfig,
    model_classes={"base": DupMAEModel, "pretraining": DupMAEForPreTraining},
    processor="DupMAEProcessor",
    modality="text",
    presets={
        # RetroMAE's tiny random BERT over the real MiniLM vocabulary
        "dupmae-tiny": dict(RETROMAE_TINY),
        # the paper: bert-base-uncased warm start, ratios 0.3 / 0.5, bag-of-words weight 0.1
        "dupmae-bert-base-uncased": dict(encoder_name_or_path="bert-base-uncased", encoder_config=dict(BERT_BASE_CONFIG),
                                         max_length=512),
        "dupmae-minilm-l6": dict(encoder_name_or_path=MINILM_HUB_ID, encoder_config=dict(MINILM_L6_CONFIG),
                                 max_length=256),
    },
    # RetroMAE's recipe (the official DupMAE scripts share it)
    pretrain_base_lr=1e-4,
    pretrain_batch=256,
    pretrain_betas=(0.9, 0.999),
    pretrain_weight_decay=0.01,
    exports=["reduce_lexical"],
)
