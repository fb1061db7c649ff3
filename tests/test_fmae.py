"""FMAE-IAT: gradient reversal by hand, the AU + identity losses by hand, bad inputs, the ORL faces loader and
``hf-mae pretrain`` / ``hf-mae finetune --identity-adversarial-lambda`` end to end."""

import json

import pytest
import torch
from conftest import run_pretrain, shared_data
from transformers import AutoModelForImageClassification

import hf_mae
from hf_mae.modeling.fmae import FMAEConfig, FMAEForFacialActionUnitDetection, FMAEForPreTraining
from hf_mae.modeling.layers import GradientReversal, reverse_gradient


@pytest.mark.parametrize("strength", [0.0, 0.5, 2.0])
def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward(strength):
    x = torch.randn(3, 5, requires_grad=True)
    upstream = torch.randn(3, 5)
    y = reverse_gradient(x, strength)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.equal(x.grad, upstream * -strength)
    assert not list(GradientReversal(strength).state_dict())  # nothing saved
    with pytest.raises(ValueError, match="strength must be a number >= 0, got -1"):
        reverse_gradient(x, -1)


def small_model(strength=2.0, identities=5, labels=3):
    config = hf_mae.create_config("fmae-tiny", num_labels=labels, identity_adversarial_lambda=strength,
                                  num_identities=identities)
    return FMAEForFacialActionUnitDetection(config).eval()


def test_losses_and_reversed_identity_gradient_by_hand():
    torch.manual_seed(0)
    model = small_model()
    pixels = torch.randn(4, 3, 32, 32)
    aus = torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]])
    ids = torch.tensor([0, 3, 4, 3])
    out = model(pixels, labels=aus, identity_labels=ids)
    pooled, _ = model.pooled_features(pixels)
    au = torch.nn.functional.binary_cross_entropy_with_logits(model.classifier(pooled), aus)
    id_logits = model.identity_classifier(pooled)
    one_hot = torch.zeros(4, 5).scatter_(1, ids[:, None], 1.0)
    ident = torch.nn.functional.binary_cross_entropy_with_logits(id_logits, one_hot)
    torch.testing.assert_close(out.action_unit_loss, au)
    torch.testing.assert_close(out.identity_loss, ident)
    torch.testing.assert_close(out.loss, au + ident)
    # the encoder receives -lambda times the identity loss's gradient; the identity head its own, unreversed
    model.zero_grad()
    model(pixels, identity_labels=ids).loss.backward()
    reversed_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.identity_loss(model.identity_classifier(model.pooled_features(pixels)[0]), ids).backward()
    for name, param in model.named_parameters():
        if param.grad is None:
            continue
        factor = 1.0 if name.startswith("identity_classifier") else -2.0
        torch.testing.assert_close(reversed_grads[name], factor * param.grad, rtol=1e-4, atol=1e-7)
    assert reversed_grads["mae.embeddings.cls_token"].abs().sum() > 0
    # integer labels: single-label cross-entropy (the registered image classifier)
    classes = torch.tensor([0, 2, 1, 2])
    torch.testing.assert_close(model(pixels, labels=classes).loss,
                               torch.nn.functional.cross_entropy(model.classifier(pooled), classes))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="identity_adversarial_lambda must be a number >= 0"):
        FMAEConfig(identity_adversarial_lambda=-0.1)
    with pytest.raises(ValueError, match="num_identities"):
        FMAEConfig(identity_adversarial_lambda=1.0, num_identities=0)
    pixels = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="no identity head.*identity_adversarial_lambda"):
        small_model(strength=0.0, identities=0)(pixels, identity_labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, num_identities=5\).*\[0, 7\]"):
        small_model()(pixels, identity_labels=torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="integer subject indices"):
        small_model()(pixels, identity_labels=torch.tensor([0.0, 1.0]))


def test_fmae_is_mae_on_faces_with_the_readme_recipe():
    from hf_mae.modeling.mae import MAEForPreTraining

    method = hf_mae.registry.METHODS["fmae"]
    assert method.pretrain_base_lr == 1.5e-4 and method.pretrain_batch == 512 and method.pretrain_weight_decay == 0.05
    assert method.pretrain_augmentation["crop_scale"] == (1.0, 1.0)  # Resize + flip, no random crop
    for size, width in (("small", 384), ("base", 768), ("large", 1024)):
        config = hf_mae.create_config(f"fmae-vit-{size}-patch16")
        assert (config.hidden_size, config.mask_ratio, config.norm_pix_loss, config.patch_size) == (width, 0.75, True, 16)
    fmae = hf_mae.create_model("fmae-tiny")
    assert isinstance(fmae, FMAEForPreTraining) and fmae.config.model_type == "fmae"
    mae = MAEForPreTraining(hf_mae.create_config("mae-tiny"))
    fmae.load_state_dict(mae.state_dict(), strict=True)  # MAE's weight layout
    pixels, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 64)
    torch.testing.assert_close(fmae(pixels, noise=noise).loss, mae(pixels, noise=noise).loss)


def test_orl_faces_loader():
    from hf_mae.training.data import load_image_dataset

    root = shared_data("orl-faces")
    train, test = load_image_dataset(str(root), "train"), load_image_dataset(str(root), "test")
    assert (len(train), len(test)) == (320, 80)
    assert train.features["identity"].num_classes == 40
    assert [train["identity"].count(i) for i in range(40)] == [8] * 40
    assert [test["identity"].count(i) for i in range(40)] == [2] * 40
    assert train[0]["image"].size == (92, 112) and train[0]["image"].mode == "L"
    with pytest.raises(ValueError, match="split 'validation'"):
        load_image_dataset(str(root), "validation")


def test_pretrain_and_identity_adversarial_finetune_cli(tmp_path, one_thread):
    from hf_mae.cli import main
    from hf_mae.training.finetune import finetune

    root = str(shared_data("orl-faces"))
    records = run_pretrain(["--model", "fmae-tiny", "--dataset", root, "--max-steps", "20", "--batch-size", "32",
                            "--lr", "2e-3", "--log-steps", "5"], tmp_path / "run")
    print(f"fmae-tiny on ORL faces: loss {records[0]['loss']:.4f} (steps 1-5) -> {records[-1]['loss']:.4f} (16-20)")
    assert records[-1]["loss"] < 0.8 * records[0]["loss"]  # measured 1.34 -> 0.80
    out = tmp_path / "ft"
    assert main(["finetune", str(tmp_path / "run"), "--dataset", root, "--output-dir", str(out), "--max-steps", "3",
                 "--batch-size", "16", "--identity-adversarial-lambda", "0.5"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["identity_adversarial_lambda"], config["num_identities"]) == (0.5, 40)
    model = AutoModelForImageClassification.from_pretrained(out)
    assert type(model) is FMAEForFacialActionUnitDetection and model.identity_classifier.out_features == 40
    quick = dict(max_steps=1, batch_size=8)
    with pytest.raises(ValueError, match="identity_adversarial_lambda must be >= 0"):
        finetune(tmp_path / "run", root, tmp_path / "bad", identity_adversarial_lambda=-1.0, **quick)
    with pytest.raises(ValueError, match="identity_column 'subject' is not a column"):
        finetune(tmp_path / "run", root, tmp_path / "bad", identity_adversarial_lambda=1.0, identity_column="subject",
                 **quick)
    with pytest.raises(ValueError, match="label_smoothing=0.1 cannot be combined"):
        finetune(tmp_path / "run", root, tmp_path / "bad", identity_adversarial_lambda=1.0, label_smoothing=0.1, **quick)
    assert not (tmp_path / "bad").exists()


def test_multi_label_metrics_by_hand():
    from types import SimpleNamespace

    import numpy as np

    from hf_mae.training.finetune import multi_label_metrics

    logits = np.array([[1.0, -1.0], [1.0, 1.0], [-1.0, -1.0], [-1.0, 1.0]])
    labels = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    metrics = multi_label_metrics(SimpleNamespace(predictions=logits, label_ids=labels))
    # AU 0: tp 1, fp 1, fn 1 -> F1 0.5; AU 1: tp 1, fp 1, fn 0 -> F1 2/3; accuracy 5 / 8
    assert metrics["f1"] == pytest.approx((0.5 + 2 / 3) / 2) and metrics["accuracy"] == pytest.approx(5 / 8)


# ------------------------------------------------------------------------------------- IAT options (off by default)


def test_iat_options_default_to_the_official_code_and_reject_bad_values():
    config = FMAEConfig()
    assert (config.identity_loss, config.identity_adversarial_schedule, config.identity_head_input) == (
        "bce", "constant", "pooled")
    for name, bad in (("identity_loss", "mse"), ("identity_adversarial_schedule", "cosine"),
                      ("identity_head_input", "cls")):
        with pytest.raises(ValueError, match=f"{name} must be one of .*got '{bad}'"):
            FMAEConfig(**{name: bad})
    with pytest.raises(ValueError, match=r"progress must be a number in \[0, 1\].*got 1.5"):
        small_model().set_training_progress(1.5)


def test_dann_ramp_by_hand_sets_the_reversed_gradient():
    from hf_mae.modeling.fmae import dann_strength

    # lambda * (2 / (1 + exp(-10 p)) - 1): 0 at p 0; p 0.1: 2 / (1 + e^-1) - 1 = 0.462117; p 0.5: 0.986614
    assert dann_strength(3.0, 0.0) == 0.0
    assert dann_strength(3.0, 0.1) == pytest.approx(3 * 0.4621172, rel=1e-6)
    assert dann_strength(3.0, 0.5) == pytest.approx(3 * 0.9866143, rel=1e-6)
    constant = small_model(strength=3.0)
    assert constant.set_training_progress(0.1) == 3.0 and constant.gradient_reversal.strength == 3.0
    torch.manual_seed(0)
    config = hf_mae.create_config("fmae-tiny", num_labels=3, identity_adversarial_lambda=3.0, num_identities=5,
                                  identity_adversarial_schedule="dann")
    model = FMAEForFacialActionUnitDetection(config).eval()
    assert model.gradient_reversal.strength == 0.0  # a model never told starts at progress 0
    pixels, ids = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 4, 3])
    model.identity_loss(model.identity_classifier(model.pooled_features(pixels)[0]), ids).backward()
    plain = model.mae.embeddings.patch_embeddings.projection.weight.grad.clone()
    model.zero_grad()
    assert model.set_training_progress(0.1) == pytest.approx(3 * 0.4621172, rel=1e-6)
    model(pixels, identity_labels=ids).loss.backward()
    torch.testing.assert_close(model.mae.embeddings.patch_embeddings.projection.weight.grad,
                               -3 * 0.4621172 * plain, rtol=1e-4, atol=1e-8)


def test_cross_entropy_identity_loss_and_both_gradients_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, requires_grad=True)
    ids = torch.tensor([0, 3, 4, 3])
    bce = small_model().identity_loss(logits, ids)
    ce_model = FMAEForFacialActionUnitDetection(hf_mae.create_config(
        "fmae-tiny", num_labels=3, identity_adversarial_lambda=2.0, num_identities=5, identity_loss="cross_entropy"))
    ce = ce_model.identity_loss(logits, ids)
    by_hand = -(logits.log_softmax(-1)[torch.arange(4), ids]).mean()
    torch.testing.assert_close(ce, by_hand)
    # d CE / d logit = (softmax - onehot) / batch; d BCE / d logit = (sigmoid - onehot) / (batch * identities)
    (g_ce,) = torch.autograd.grad(ce, logits)
    (g_bce,) = torch.autograd.grad(bce, logits)
    one_hot = torch.nn.functional.one_hot(ids, 5).float()
    torch.testing.assert_close(g_ce, (logits.softmax(-1) - one_hot).detach() / 4)
    torch.testing.assert_close(g_bce, (logits.sigmoid() - one_hot).detach() / 20)  # the 1 / num_identities


def test_identity_head_on_tokens_scores_every_patch_token():
    torch.manual_seed(0)
    config = hf_mae.create_config("fmae-tiny", num_labels=3, identity_adversarial_lambda=1.0, num_identities=5,
                                  identity_head_input="tokens", identity_loss="cross_entropy")
    model = FMAEForFacialActionUnitDetection(config).eval()
    pixels, ids = torch.randn(2, 3, 32, 32), torch.tensor([1, 4])
    out = model(pixels, identity_labels=ids)
    tokens = model.mae(pixels, mask_ratio=0.0).last_hidden_state[:, 1:]
    assert out.identity_logits.shape == (2, 64, 5)  # 32 px / 4 px patches
    per_token = model.identity_classifier(model.fc_norm(tokens))
    torch.testing.assert_close(out.identity_logits, per_token)
    by_hand = torch.stack([torch.nn.functional.cross_entropy(per_token[b], ids[b].repeat(64)) for b in range(2)]).mean()
    torch.testing.assert_close(out.identity_loss, by_hand)
    out.loss.backward()  # the encoder gets the reversed gradient from every token
    assert model.mae.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0


def test_finetune_passes_the_iat_options_and_drives_the_dann_ramp(tmp_path, one_thread):
    from hf_mae.modeling.fmae import dann_strength
    from hf_mae.training.finetune import build_trainer

    root = str(shared_data("orl-faces"))
    run = tmp_path / "run"
    hf_mae.create_model("fmae-tiny").save_pretrained(run)
    trainer = build_trainer(run, root, tmp_path / "ft", max_steps=2, batch_size=8, max_eval_samples=8,
                            identity_adversarial_lambda=2.0, identity_loss="cross_entropy",
                            identity_adversarial_schedule="dann", identity_head_input="tokens")
    config = trainer.model.config
    assert (config.identity_loss, config.identity_adversarial_schedule, config.identity_head_input) == (
        "cross_entropy", "dann", "tokens")
    trainer.train()
    # TrainingProgressCallback: after the last of the 2 steps, progress 1
    assert trainer.model.gradient_reversal.strength == pytest.approx(dann_strength(2.0, 1.0))
    assert any(isinstance(c, hf_mae.TrainingProgressCallback) for c in trainer.callback_handler.callbacks)
    with pytest.raises(ValueError, match="identity_loss must be one of"):
        build_trainer(run, root, tmp_path / "bad", max_steps=1, identity_adversarial_lambda=1.0, identity_loss="mse")
    mae_run = tmp_path / "mae"
    hf_mae.create_model("mae-tiny").save_pretrained(mae_run)
    with pytest.raises(ValueError, match="identity_head_input='tokens' needs an FMAE model"):
        build_trainer(mae_run, root, tmp_path / "bad", max_steps=1, identity_head_input="tokens")
