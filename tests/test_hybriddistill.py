"""Hybrid Distill (Shi et al., ICLR 2024): the token-dropping schedule, the relation (attention KL) and feature
(whitened SmoothL1) losses against hand computations, two frozen teachers (by config, instance, CLI), and training
in which both losses fall and the student's mean attention distance moves to the MIM teacher's."""

import json
import math

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.embeddings import sincos_2d
from hf_mae.modeling.hybriddistill import (
    HybridDistillForPreTraining,
    HybridDistillModel,
    gather_relations,
    teacher_relations,
)
from hf_mae.modeling.losses import attention_kl
from hf_mae.modeling.masking import keep_top_scores
from hf_mae.modeling.teachers import build_frozen_teacher
from hf_mae.training.probe import labelled_inputs, mean_attention_distance

from conftest import run_pretrain

TINY = "hybriddistill-tiny"


def local_attention_teacher(scale: float = 3.0):
    """A 4-block ViT (32 px, 4-px patches, 64-d, 4 heads) whose attention is local by construction: 2-D sin-cos
    positions dominate the tokens and q = k = scale * LN(x), so a patch attends most to its neighbours (mean attention
    distance ~2.7 patches on digits, where a random ViT's is ~4.1)."""
    config = AutoConfig.for_model("vit", image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=4,
                                  num_attention_heads=4, intermediate_size=128)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModel.from_config(config, attn_implementation="eager", add_pooling_layer=False)
    with torch.no_grad():
        model.embeddings.position_embeddings.copy_(sincos_2d((8, 8), 64, cls_token=True)[None] * 3)
        model.embeddings.patch_embeddings.projection.weight.mul_(0.1)
        for layer in model.layers:
            for projection in (layer.attention.q_proj, layer.attention.k_proj):
                projection.weight.copy_(torch.eye(64) * scale)
                projection.bias.zero_()
    return model


def test_mean_attention_distance_by_hand():
    # 2x2 grid, one cls token: query 0 puts 1/2 on itself and 1/2 on patch 3 (distance sqrt 2); the others attend to
    # themselves only; a share on the cls token is left out (renormalised over the patches)
    attention = torch.zeros(1, 1, 5, 5)
    attention[0, 0, :, 0] = 0.2
    attention[0, 0, 1, 1], attention[0, 0, 1, 4] = 0.4, 0.4
    for query in (2, 3, 4):
        attention[0, 0, query, query] = 0.8
    distance = mean_attention_distance([attention, attention], (2, 2))
    assert distance.shape == (2, 1)
    torch.testing.assert_close(distance, torch.full((2, 1), math.sqrt(2) / 2 / 4))
    with pytest.raises(ValueError, match="grid"):
        mean_attention_distance(attention, (3, 3))


def test_relations_are_gathered_at_the_held_tokens_and_renormalised():
    attention = torch.softmax(torch.randn(2, 3, 1 + 2 + 4, 1 + 2 + 4), dim=-1)  # cls, 2 extra prefix tokens, 2x2
    relations = teacher_relations(attention, num_prefix_tokens=3, grid=(2, 2), to_grid=(2, 2))
    keep = torch.tensor([0, 3, 4, 5, 6])  # the cls token and the patches; DeiT's distillation-like tokens left out
    torch.testing.assert_close(relations, attention[:, :, keep][:, :, :, keep])
    ids = torch.tensor([[3, 1], [0, 2]])
    gathered = gather_relations(relations, ids)
    for b in range(2):
        index = torch.cat([torch.tensor([0]), ids[b] + 1])
        expected = relations[b][:, index][:, :, index]
        torch.testing.assert_close(gathered[b], expected / expected.sum(-1, keepdim=True))
    resized = teacher_relations(attention, 3, (2, 2), (4, 4))  # another student grid: keys and queries resized
    assert resized.shape == (2, 3, 17, 17) and (resized >= 0).all()


def test_attention_kl_by_hand():
    teacher = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    student = torch.tensor([[0.25, 0.25, 0.5], [0.2, 0.3, 0.5]])
    torch.testing.assert_close(attention_kl(teacher, student), torch.tensor(math.log(2) / 2))


def test_token_dropping_follows_the_schedule():
    """tiny: drops after blocks 2 and 3 keeping ceil(0.7 k): 64, 64, 45, 32 patches at the inputs of blocks 1-4;
    each drop keeps the held patches the feature teacher's CLS token attends to most, in their order."""
    torch.manual_seed(0)
    model = hf_mae.create_model(TINY).eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    feature = model.get_teacher("feature_teacher", "cpu")(pixel_values=images, output_attentions=True)
    scores = feature.attentions[-1][:, :, 0, 1:].mean(dim=1)  # by hand from the HF teacher's own output
    out = model(images)
    student = model.encode_student(images, model.mae.mask_generator(3, 64, 0.0), (8, 8), scores)
    assert [ids.shape[1] for ids in student.block_ids] == [64, 64, 45, 32]
    for held, kept in zip(student.block_ids[1:3], student.block_ids[2:4]):
        for b in range(3):
            dropped = held[b][~torch.isin(held[b], kept[b])]
            assert scores[b, kept[b]].min() >= scores[b, dropped].max()
            assert torch.equal(kept[b], held[b][torch.isin(held[b], kept[b])])  # the held order is kept
    assert torch.equal(out.kept_ids, student.block_ids[-1])
    assert out.final_mask.sum(1).tolist() == [32.0] * 3 and out.mask.sum() == 0  # nothing hidden from the input
    assert out.logits.shape == (3, 33, 64)
    assert keep_top_scores(torch.tensor([[5, 1, 3]]), torch.arange(6.0)[None], 2).tolist() == [[0, 2]]
    no_drop = hf_mae.create_model(TINY, token_drop_layers=[])(images)
    assert no_drop.logits.shape == (3, 65, 64) and no_drop.final_mask.sum() == 0


def smooth_l1(a, b):
    difference = (a - b).abs()
    return torch.where(difference < 1, 0.5 * difference**2, difference - 0.5).mean()


def test_losses_by_hand_on_a_fixed_mask():
    """With r = 0.5 fixed by noise and no dropping: relation KL at blocks 1-3 against the MIM teacher's blocks 1-3
    restricted to the visible tokens, and SmoothL1 of the projected final tokens against the whitened last block of
    the feature teacher."""
    torch.manual_seed(0)
    model = hf_mae.create_model(TINY, mask_ratio=0.5, token_drop_layers=[]).eval()
    generator = torch.Generator().manual_seed(0)
    images, noise = torch.randn(2, 3, 32, 32, generator=generator), torch.rand(2, 64, generator=generator)
    out = model(images, noise=noise)
    ids = noise.argsort(dim=1)[:, :32]
    index = torch.cat([torch.zeros(2, 1, dtype=torch.long), ids + 1], dim=1)
    encoded = model.mae(images, noise=noise, mask_ratio=0.5, output_attentions=True, output_hidden_states=True)
    mim = model.get_teacher("mim_teacher", "cpu")(pixel_values=images, output_attentions=True)
    relation = 0.0
    for block in range(3):
        teacher = torch.stack([mim.attentions[block][b][:, index[b]][:, :, index[b]] for b in range(2)])
        teacher = teacher / teacher.sum(-1, keepdim=True)
        student = encoded.attentions[block]
        relation = relation + (teacher * (teacher.log() - student.log())).sum(-1).mean() / 3
    torch.testing.assert_close(out.loss_relation, relation, rtol=1e-4, atol=1e-6)

    feature = model.get_teacher("feature_teacher", "cpu")(pixel_values=images, output_hidden_states=True)
    target = feature.hidden_states[-1]  # the last block's output, before the final norm
    target = (target - target.mean(-1, keepdim=True)) / target.var(-1, unbiased=False, keepdim=True).add(1e-5).sqrt()
    target = torch.stack([target[b, index[b]] for b in range(2)])
    prediction = model.feature_head(encoded.last_hidden_state)
    torch.testing.assert_close(out.logits, prediction, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss_feature, smooth_l1(prediction, target), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss, out.loss_relation + out.loss_feature)


def test_relation_blocks_alone_run_eager_attention():
    """With sdpa configured, only the relation blocks materialise attention weights (eager for them alone)."""
    model = HybridDistillForPreTraining._from_config(hf_mae.create_config(TINY, relation_layers=[2]),
                                                     attn_implementation="sdpa")  # fmt: skip
    assert model.config._attn_implementation == "sdpa"
    student = model.encode_student(torch.randn(1, 3, 32, 32), model.mae.mask_generator(1, 64, 0.0), (8, 8),
                                   relation_layers=[2])  # fmt: skip
    assert list(student.attentions) == [2] and student.attentions[2].shape == (1, 4, 65, 65)


def test_teachers_as_instances_and_never_saved(tmp_path):
    """An hf-mae MAE encoder as the MIM teacher and a CLIP vision tower as the feature teacher, given to the
    constructor: the feature width sets the projection; both stay frozen and out of the state dict."""
    mae = hf_mae.create_model("mae-tiny", task="base")
    vision = dict(image_size=32, patch_size=4, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=96)  # fmt: skip
    clip = AutoModel.from_config(AutoConfig.for_model("clip_vision_model", **vision), attn_implementation="eager")
    model = HybridDistillForPreTraining(hf_mae.create_config(TINY), mim_teacher=mae, feature_teacher=clip)
    assert model.config.feature_teacher_hidden_size == 48 and model.feature_head.out_features == 48
    out = model(torch.randn(2, 3, 32, 32))
    out.loss.backward()
    assert torch.isfinite(out.loss_relation) and out.loss_relation > 0 and out.logits.shape == (2, 33, 48)
    for teacher in (mae, clip):
        assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
        assert not teacher.training
    assert not any(name.startswith(("mim_teacher", "feature_teacher")) for name in model.state_dict())
    model.save_pretrained(tmp_path / "run")
    encoder = AutoModel.from_pretrained(tmp_path / "run")
    assert isinstance(encoder, HybridDistillModel) and encoder(torch.randn(1, 3, 32, 32)).last_hidden_state.shape == (1, 65, 128)


def test_bad_configs():
    with pytest.raises(ValueError, match="token_drop_layers"):
        hf_mae.create_config(TINY, token_drop_layers=[4])  # after the last block
    with pytest.raises(ValueError, match="relation_layers"):
        hf_mae.create_config(TINY, relation_layers=[0, 2])
    with pytest.raises(ValueError, match="token_keep_rate"):
        hf_mae.create_config(TINY, token_keep_rate=0.0)
    with pytest.raises(ValueError, match="mim_teacher_config"):
        hf_mae.create_config(TINY, mim_teacher_config={"hidden_size": 8})
    with pytest.raises(ValueError, match="feature_teacher_image_std"):
        hf_mae.create_config(TINY, feature_teacher_image_mean=[0.5] * 3)
    with pytest.raises(TypeError, match="teacher"):
        HybridDistillForPreTraining(hf_mae.create_config(TINY), mim_teacher=torch.nn.Linear(3, 3))
    model = hf_mae.create_model(TINY, feature_teacher_hidden_size=32, feature_teacher_name_or_path="some/hub-id",
                                feature_teacher_config=None)  # fmt: skip
    model.set_frozen_teacher("feature_teacher", build_frozen_teacher(hf_mae.create_config(TINY), "feature_teacher"))
    with pytest.raises(ValueError, match="feature_teacher_hidden_size"):  # a Hub id's width: checked when it runs
        model(torch.randn(1, 3, 32, 32))
    assert hf_mae.create_model(TINY, feature_teacher_config=dict(
        model_type="vit", image_size=32, patch_size=4, hidden_size=40, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=80)).feature_head.out_features == 40  # a config dict's width sets the projection


def test_losses_fall_and_attention_distance_moves_to_the_mim_teacher(one_thread):
    """50 steps on digits with a local-attention MIM teacher: both losses fall, and the student's mean attention
    distance at the relation blocks (1-3) moves from a random ViT's ~4.1 patches to the teacher's ~2.7; the last
    block, which has no relation loss, stays far (the control)."""
    torch.manual_seed(0)
    mim = local_attention_teacher()
    model = hf_mae.create_model(TINY)
    model.set_frozen_teacher("mim_teacher", mim)
    processor = hf_mae.create_processor(TINY)
    images = labelled_inputs("digits", "train", processor)[0]
    held_out = labelled_inputs("digits", "test", processor)[0][:32]
    with torch.no_grad():
        teacher_distance = mean_attention_distance(mim(pixel_values=held_out, output_attentions=True).attentions,
                                                   (8, 8)).mean(dim=1)  # fmt: skip

    def student_distance():
        model.eval()
        with torch.no_grad():
            attentions = model.mae(held_out, mask_ratio=0.0, output_attentions=True).attentions
        model.train()
        return mean_attention_distance(attentions, (8, 8)).mean(dim=1)

    before = student_distance()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    relation, feature = [], []
    for _ in range(50):
        out = model(images[torch.randint(0, len(images), (16,), generator=generator)])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        relation.append(out.loss_relation.item())
        feature.append(out.loss_feature.item())
    after = student_distance()
    gap_before, gap_after = (before - teacher_distance).abs(), (after - teacher_distance).abs()
    first = sum(relation[:10]) / 10, sum(feature[:10]) / 10
    last = sum(relation[-10:]) / 10, sum(feature[-10:]) / 10
    print(f"relation KL {first[0]:.3f} -> {last[0]:.3f}, feature SmoothL1 {first[1]:.4f} -> {last[1]:.4f}; mean "
          f"attention distance (patches) teacher {teacher_distance.tolist()}, student {before.tolist()} -> "
          f"{after.tolist()}")  # fmt: skip
    assert last[0] < 0.4 * first[0]  # measured 2.033 -> 0.440
    assert last[1] < 0.4 * first[1]  # measured 0.2251 -> 0.0343
    assert gap_after[:3].mean() < 0.25 * gap_before[:3].mean()  # measured 1.398 -> 0.127
    assert gap_after[3] > 0.5 * gap_before[3]  # the control, block 4: measured 1.37 -> 1.40


def test_pretrain_cli_with_teacher_config_overrides(tmp_path, one_thread):
    teacher = dict(model_type="vit", image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2,
                   num_attention_heads=2, intermediate_size=64)  # fmt: skip
    argv = ["--model", TINY, "--dataset", "digits", "--max-steps", "3", "--batch-size", "8",
            "--config-overrides", f"mim_teacher_config={json.dumps(teacher)}",
            f"feature_teacher_config={json.dumps(teacher)}"]  # fmt: skip
    records = run_pretrain(argv, tmp_path / "run")
    assert all(math.isfinite(record["loss"]) for record in records)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path / "run")
    assert isinstance(loaded, HybridDistillForPreTraining) and loaded.config.mim_teacher_config == teacher
    assert loaded.feature_head.out_features == 32 and torch.isfinite(loaded(torch.randn(2, 3, 32, 32)).loss)


def test_a_vit_mae_teacher_sees_every_patch_in_order():
    """transformers' ViTMAEModel masks config.mask_ratio of the patches on every call; as a teacher (the paper's
    MAE ViT-B) teacher_forward runs it on every patch in order, and the model still trains against it."""
    from hf_mae.modeling.teachers import teacher_forward

    settings = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64)  # fmt: skip
    vit_mae = AutoModel.from_config(AutoConfig.for_model("vit_mae", **settings), attn_implementation="eager").eval()
    vit = AutoModel.from_config(AutoConfig.for_model("vit", **settings), attn_implementation="eager",
                                add_pooling_layer=False).eval()  # fmt: skip
    vit.load_state_dict(vit_mae.state_dict())  # the same weights in ViT's (unmasked) layout
    images = torch.randn(2, 3, 32, 32)
    features = teacher_forward(vit_mae, images, output_attentions=True)
    assert vit_mae.config.mask_ratio == 0.75  # restored after the call
    assert features.num_prefix_tokens == 1 and features.attentions[0].shape == (2, 2, 65, 65)
    assert set(vit.state_dict()) == set(vit_mae.state_dict())  # the same names: unmasked, the ViT MAE is that ViT
    expected = vit(pixel_values=images, output_hidden_states=True).hidden_states[1:]
    for got, want in zip(features.hidden_states, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    model = HybridDistillForPreTraining(hf_mae.create_config(TINY), mim_teacher=vit_mae)
    out = model(torch.randn(2, 3, 32, 32))
    assert torch.isfinite(out.loss) and out.loss_relation > 0


def test_pretrain_python_api_takes_both_teacher_instances(tmp_path, one_thread):
    from hf_mae.training.pretrain import pretrain

    vision = dict(image_size=32, patch_size=4, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=96)  # fmt: skip
    mim, feature = (AutoModel.from_config(AutoConfig.for_model("vit", **vision), attn_implementation="eager")
                    for _ in range(2))  # fmt: skip
    _, summary = pretrain(model=TINY, dataset="digits", output_dir=str(tmp_path / "run"), max_steps=2, batch_size=8,
                          teachers={"mim_teacher": mim, "feature_teacher": feature})  # fmt: skip
    assert summary["steps"] == 2 and math.isfinite(summary["final_loss"])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["feature_teacher_hidden_size"] == 48
