"""MAE learns: pre-training mae-tiny on digits lowers the masked loss well below its start and below the level of
predicting each patch's mean. (What the features are worth against a random-init encoder is measured with the
same pretrained fixture in tests/test_probe.py and tests/test_finetune.py.)"""

import numpy as np


def test_pretraining_lowers_the_masked_loss(pretrained_mae):
    _, losses = pretrained_mae
    first, last = np.mean(losses[:20]), np.mean(losses[-20:])
    print(f"masked norm-pix loss: first 20 steps {first:.3f} -> last 20 steps {last:.3f}")
    # 1.0 is what predicting each patch's mean scores on norm-pix targets
    assert last < 0.5, last
    assert last < 0.5 * first, (first, last)
