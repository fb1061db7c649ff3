"""FMAE-IAT on the ORL shortcut task (``benchmarks/fmae_identity_shortcut.py``): the one IAT setting that removed
identity from the features on every seed measured. Cross-entropy identity loss, the DANN ramp and the identity head
on every patch token, λ 1, 300 steps from random init: the clean identity linear probe (a fresh logistic
regression on frozen pooled features, train images -> held-out images of the same subjects) fell on all 10 seeds,
by 0.141 ± 0.063 (0.781 ± 0.036 -> 0.640 ± 0.050), on seeds 0, 1, 2 by 0.125, 0.037, 0.075. The test score did
*not* rise consistently (AUC +0.027 ± 0.032, up on 8 of 10 seeds), so only the probe is asserted; the official
setting (BCE, constant λ, pooled head) moved neither beyond the seed spread (see the README)."""

import numpy as np
import pytest
from conftest import load_benchmark, shared_data


@pytest.mark.slow  # six 300-step fine-tunes: 48 s of CPU on one thread (89 s wall on the shared 2-core machine)
def test_token_identity_adversary_lowers_the_identity_probe_on_three_seeds(one_thread):
    bench = load_benchmark("fmae_identity_shortcut")
    data = bench.shortcut_data(mark_strength=0.1, train_rate=1.0, root=shared_data("orl-faces"))
    options = dict(identity_loss="cross_entropy", identity_adversarial_schedule="dann", identity_head_input="tokens")
    drops = []
    for seed in (0, 1, 2):
        plain = bench.fine_tune(data, 0.0, seed=seed, steps=300)
        iat = bench.fine_tune(data, 1.0, seed=seed, steps=300, config_overrides=options)
        drops.append(plain["identity_probe_clean"] - iat["identity_probe_clean"])
        print(f"seed {seed}: clean identity probe {plain['identity_probe_clean']:.3f} -> "
              f"{iat['identity_probe_clean']:.3f}, test AUC {plain['test_auc']:.3f} -> {iat['test_auc']:.3f}")
    # measured drops 0.125, 0.037, 0.075 (of 80 held-out images: 10, 3, 6): every seed lower by >= 2 images, and
    # on average by more than the seed spread of the no-IAT probe (0.036 over 10 seeds)
    assert min(drops) >= 0.025 - 1e-9, drops
    assert np.mean(drops) > 0.05, drops  # measured 0.079
