"""The Audio-MAE feature extractor (Kaldi fbank parity with transformers' AST extractor, resampling, errors) and
audio folders in the data loader (FSDD's flat folder of wavs, class folders)."""

import wave

import numpy as np
import pytest
import torch
from conftest import shared_data
from transformers import ASTFeatureExtractor

from hf_mae.processors.feature_extraction_audiomae import KALDI_LOG_FLOOR as KALDI_FLOOR
from hf_mae.processors.feature_extraction_audiomae import AudioMAEFeatureExtractor, read_wav, resample_audio
from hf_mae.training.data import collate, load_image_dataset, with_model_inputs


def _sine(frequency, rate, seconds):
    return np.sin(2 * np.pi * frequency * np.arange(int(rate * seconds)) / rate).astype(np.float32)


def _dominant_frequency(waveform, rate):
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return np.fft.rfftfreq(len(waveform), 1 / rate)[spectrum.argmax()]


def _write_wav(path, samples, rate, channels=1):
    """float samples in [-1, 1] ((n,) or (n, channels)) -> 16-bit PCM wav."""
    with wave.open(str(path), "wb") as file:
        file.setnchannels(channels)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def test_matches_transformers_ast_feature_extractor_at_16khz():
    rng = np.random.default_rng(0)
    clips = [
        0.1 * rng.standard_normal(16000 * 3).astype(np.float32),  # longer than max_length frames: cut
        rng.uniform(-1, 1, 7001).astype(np.float32),  # shorter: padded
        _sine(440, 16000, 2.0),
        0.5 * _sine(3000, 16000, 1.3) + 0.2 * _sine(125, 16000, 1.3),
    ]
    ours = AudioMAEFeatureExtractor()(clips, sampling_rate=16000, return_tensors="np")["input_values"]
    ast = ASTFeatureExtractor()(clips, sampling_rate=16000, return_tensors="np")["input_values"]
    difference = np.abs(ours - ast).max()
    print(f"max |ours - AST| over {len(clips)} clips: {difference:.2e}")
    assert ours.shape == ast.shape == (4, 1024, 128)
    assert difference < 1e-4
    # a single clip (not a list) is a batch of one
    single = AudioMAEFeatureExtractor(max_length=100)(clips[2], sampling_rate=16000, return_tensors="pt")
    assert single["input_values"].shape == (1, 100, 128)
    assert torch.allclose(single["input_values"][0], torch.from_numpy(ours[2, :100]))


def test_frame_sizes_follow_the_sampling_rate():
    assert AudioMAEFeatureExtractor(sampling_rate=16000).frame_sizes == (400, 160, 512)
    assert AudioMAEFeatureExtractor(sampling_rate=32000).frame_sizes == (800, 320, 1024)  # Bird-MAE
    features = AudioMAEFeatureExtractor(sampling_rate=32000, max_length=512)(
        _sine(1000, 32000, 2.0), sampling_rate=32000, return_tensors="np"
    )["input_values"][0]
    # 2 s at a 10 ms hop with snip_edges: 1 + (64000 - 800) // 320 = 198 frames, then padding
    assert np.isfinite(features).all()
    padding = (0.0 - (-4.2677393)) / (2 * 4.5689974)
    assert np.allclose(features[198:], padding) and not np.allclose(features[197], padding)


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_resampling_keeps_a_sine_and_its_frequency(rate):
    clip = _sine(440, rate, 1.0)
    resampled = resample_audio(clip, rate, 16000)
    assert resampled.shape == (16000,)
    exact = _sine(440, 16000, 1.0)
    error = np.abs(resampled - exact)[100:-100].max()  # edges see the zero padding
    frequency = _dominant_frequency(resampled, 16000)
    print(f"{rate} Hz -> 16 kHz: max error {error:.1e}, dominant frequency {frequency:.1f} Hz")
    assert error < 1e-3
    assert abs(frequency - 440) <= 1.0
    # features of the resampled clip match features computed from a 16 kHz original
    extractor = AudioMAEFeatureExtractor(max_length=98)
    from_rate = extractor(clip, sampling_rate=rate, return_tensors="np")["input_values"]
    native = extractor(exact, sampling_rate=16000, return_tensors="np")["input_values"]
    # compare where the sine has energy (within ~40 dB of the peak); near-silent bins only show numerical noise
    loud = native[:, 2:-2] > native.max() - 1.0
    feature_error = np.abs(from_rate - native)[:, 2:-2][loud].max()
    print(f"{rate} Hz -> 16 kHz: max log-mel difference {feature_error:.1e} over {loud.sum()} loud cells")
    assert loud.sum() > 200 and feature_error < 0.05


def test_downsampling_removes_content_above_the_new_nyquist():
    clip = _sine(7000, 44100, 1.0)  # above 8 kHz's Nyquist (4 kHz): must not alias to 1 kHz
    resampled = resample_audio(clip, 44100, 8000)
    leakage = np.abs(resampled[200:-200]).max()
    print(f"7 kHz sine after 44.1 -> 8 kHz: peak {leakage:.1e}")
    assert leakage < 0.01


def test_stereo_needs_a_channel_reduction_rule():
    left, right = _sine(440, 16000, 0.5), _sine(880, 16000, 0.5)
    stereo = np.stack([left, right])  # (channels, samples)
    extractor = AudioMAEFeatureExtractor(max_length=40)
    with pytest.raises(ValueError, match="channel_reduction"):
        extractor([stereo], sampling_rate=16000)
    first = extractor([stereo.T], sampling_rate=16000, channel_reduction="first")["input_values"][0]  # (samples, ch)
    assert np.allclose(first, extractor(left, sampling_rate=16000)["input_values"][0])
    mean = AudioMAEFeatureExtractor(max_length=40, channel_reduction="mean")([stereo], sampling_rate=16000)
    assert np.allclose(mean["input_values"][0], extractor((left + right) / 2, sampling_rate=16000)["input_values"][0])
    with pytest.raises(ValueError, match="channel_reduction"):
        AudioMAEFeatureExtractor(channel_reduction="sum")


def test_bad_input_is_a_clear_error(caplog):
    extractor = AudioMAEFeatureExtractor(max_length=10)
    with pytest.raises(ValueError, match="empty"):
        extractor(np.zeros(0, dtype=np.float32), sampling_rate=16000)
    with pytest.raises(ValueError, match="empty"):
        extractor([], sampling_rate=16000)
    with pytest.raises(ValueError, match="shorter than one 25.0 ms window"):
        extractor(np.zeros(100, dtype=np.float32), sampling_rate=16000)
    bad = _sine(440, 16000, 0.1)
    bad[5] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        extractor(bad, sampling_rate=16000)
    bad[5] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        extractor(bad, sampling_rate=16000)
    with pytest.raises(ValueError, match="resample=False"):
        AudioMAEFeatureExtractor(resample=False)(_sine(440, 8000, 0.1), sampling_rate=8000)
    with pytest.raises(ValueError, match="sampling_rate must be a positive integer"):
        extractor(_sine(440, 16000, 0.1), sampling_rate=-5)
    with pytest.raises(TypeError, match="raw_speech"):
        extractor("not audio", sampling_rate=16000)
    # a missing sampling_rate is a warning (as in transformers), then the model's rate is assumed
    caplog.set_level("WARNING")
    extractor(_sine(440, 16000, 0.1))
    assert "sampling_rate" in caplog.text


def test_integer_pcm_and_wav_round_trip(tmp_path):
    clip = 0.5 * _sine(440, 8000, 0.5)
    _write_wav(tmp_path / "a.wav", clip, 8000)
    samples, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000 and samples.dtype == np.float32 and samples.shape == clip.shape
    assert np.abs(samples - clip).max() < 1e-4  # 16-bit quantisation
    extractor = AudioMAEFeatureExtractor(max_length=50)
    pcm = (clip * 32767).astype(np.int16)  # integer PCM is scaled to [-1, 1) by 2**15
    from_int = extractor(pcm, sampling_rate=8000)["input_values"][0]
    from_float = extractor(pcm.astype(np.float32) / 32768, sampling_rate=8000)["input_values"][0]
    assert np.abs(from_int - from_float).max() < 1e-5


def test_save_and_load_round_trip(tmp_path):
    from transformers import AutoFeatureExtractor

    extractor = AudioMAEFeatureExtractor(sampling_rate=32000, max_length=256, mean=-7.0, std=3.0)
    extractor.save_pretrained(tmp_path)
    loaded = AudioMAEFeatureExtractor.from_pretrained(tmp_path)
    clip = _sine(500, 32000, 1.0)
    assert np.array_equal(loaded(clip, sampling_rate=32000)["input_values"][0], extractor(clip, sampling_rate=32000)["input_values"][0])
    import hf_mae  # noqa: F401  (importing registers the extractor with AutoFeatureExtractor)

    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)) is AudioMAEFeatureExtractor


def test_class_folders_of_wavs_become_a_labelled_dataset(tmp_path):
    for split in ("train", "test"):
        for label, frequency in (("high", 2000), ("low", 300)):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(2):
                _write_wav(tmp_path / split / label / f"{i}.wav", 0.3 * _sine(frequency + 10 * i, 22050, 0.4), 22050)
    dataset = load_image_dataset(str(tmp_path), split="test")
    assert dataset.column_names == ["audio", "label"] and dataset.features["label"].names == ["high", "low"]
    extractor = AudioMAEFeatureExtractor(max_length=48, num_mel_bins=64)
    batch = collate([example for example in with_model_inputs(dataset, extractor)])
    assert batch["input_values"].shape == (4, 48, 64) and batch["labels"].tolist() == [0, 0, 1, 1]
    # the 2 kHz clips put more energy into the upper half of the mel bins than the 300 Hz ones
    upper = batch["input_values"][:, 5:35, 32:].mean(dim=(1, 2))
    assert upper[:2].min() > upper[2:].max()


def test_fsdd_flat_folder_takes_labels_from_file_names():
    folder = shared_data("fsdd/recordings")
    dataset = load_image_dataset(str(folder))
    assert len(dataset) == 3000 and dataset.features["label"].names == [str(i) for i in range(10)]
    labels = np.array(dataset["label"])
    assert np.bincount(labels).tolist() == [300] * 10
    names = [path.rsplit("/", 1)[1] for path in dataset["audio"]]
    assert all(name.startswith(f"{label}_") for name, label in zip(names, labels))
    subset = dataset.select(range(0, 3000, 300))  # one clip per digit
    extractor = AudioMAEFeatureExtractor(max_length=128)  # 8 kHz recordings, resampled to 16 kHz
    batch = collate([example for example in with_model_inputs(subset, extractor)])
    assert batch["input_values"].shape == (10, 128, 128)
    assert batch["labels"].tolist() == list(range(10))
    assert torch.isfinite(batch["input_values"]).all()
    samples, rate = read_wav(subset[0]["audio"])
    direct = extractor(samples, sampling_rate=rate, return_tensors="pt")["input_values"][0]
    assert torch.equal(batch["input_values"][0], direct)
    print(f"FSDD: {len(dataset)} clips, input_values {tuple(batch['input_values'].shape)}, "
          f"mean {batch['input_values'].mean():.3f}, std {batch['input_values'].std():.3f}")


# -- training-time augmentations (Bird-MAE / BirdSet) --

def _birdsong(seed, seconds=1.0, rate=32000):
    """A chirp plus a little noise: every mel bin of the valid frames above Kaldi's floor."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * (2000 + 3000 * t) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _extractor(**augmentations):
    return AudioMAEFeatureExtractor(sampling_rate=32000, max_length=128, mean=-7.2, std=4.43, **augmentations)


def test_gain_shifts_the_log_mel_by_exactly_k_db():
    clip, gain = _birdsong(0), 6.0
    extractor = _extractor(gain_probability=1.0, gain_db=[gain, gain])
    plain = extractor(clip, sampling_rate=32000)["input_values"][0]
    gained = extractor(clip, sampling_rate=32000, augment=True)["input_values"][0]
    valid = plain[:98]  # 1 s at 10 ms hops: 98 frames, then padding (untouched by gain)
    # bins at Kaldi's floor (e.g. all-zero low mel triangles) cannot shift: compare the others
    unfloored = valid * 2 * 4.43 - 7.2 > np.log(KALDI_FLOOR) + 1
    assert unfloored.mean() > 0.9
    expected = gain * np.log(10) / 10 / (2 * 4.43)  # power x 10^(k/10) -> natural-log shift, then normalised
    shift = (gained[:98] - valid)[unfloored]
    print(f"gain {gain} dB: log-mel shift {shift.mean():.6f} (expected {expected:.6f}) in {unfloored.mean():.1%} "
          f"of the valid bins, spread {np.ptp(shift):.2e}")
    np.testing.assert_allclose(shift, expected, atol=2e-5)
    np.testing.assert_array_equal(gained[98:], plain[98:])


def test_mix_adds_another_clip_of_the_call_at_the_set_snr():
    clips = [_birdsong(1), 0.05 * _birdsong(2)[:24000]]  # the second is shorter: zero-padded as a source
    extractor = _extractor(mix_probability=1.0, mix_snr_db=[10.0, 10.0], mix_max_sources=1)
    mixed = extractor.augment_waveforms(clips)
    added = mixed[0].astype(np.float64) - clips[0]
    ratio_db = 20 * np.log10(np.sqrt(np.mean(clips[0].astype(np.float64) ** 2)) / np.sqrt(np.mean(added**2)))
    print(f"mix at 10 dB: measured SNR {ratio_db:.4f} dB")
    assert abs(ratio_db - 10.0) < 1e-3
    source = np.pad(clips[1], (0, 8000))  # the other clip, padded to the first clip's length
    assert abs(np.corrcoef(added, source)[0, 1] - 1) < 1e-6
    assert mixed[1].shape == clips[1].shape
    # one clip alone has nothing to mix with
    np.testing.assert_array_equal(extractor.augment_waveforms(clips[:1])[0], clips[0])


def test_colored_noise_has_the_set_snr_and_slope():
    clip = _birdsong(3)
    extractor = _extractor(colored_noise_probability=1.0, colored_noise_snr_db=[20.0, 20.0],
                           colored_noise_exponent=[2.0, 2.0])
    torch.manual_seed(0)
    noise = extractor.augment_waveforms([clip])[0].astype(np.float64) - clip
    snr_db = 10 * np.log10(np.mean(clip.astype(np.float64) ** 2) / np.mean(noise**2))
    power = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(noise.size, 1 / 32000)
    keep = (freqs > 100) & (freqs < 15000)
    slope = np.polyfit(np.log(freqs[keep]), np.log(power[keep]), 1)[0]
    print(f"coloured noise: SNR {snr_db:.4f} dB (set 20), log-log PSD slope {slope:.3f} (set -2)")
    assert abs(snr_db - 20.0) < 1e-3 and abs(slope + 2.0) < 0.1


@pytest.mark.parametrize("axis", [1, 0])  # a band of mel bins (frequency), of frames (time)
def test_frequency_and_time_masks_are_bands_of_the_fill_value(axis):
    clip, max_width = _birdsong(4), 50
    kind = "freq" if axis == 1 else "time"
    extractor = _extractor(**{f"{kind}_mask_probability": 1.0, f"{kind}_mask_max_width": max_width})
    plain = extractor(clip, sampling_rate=32000)["input_values"][0]
    fill = extractor.normalize(np.full(1, extractor.padding_value, dtype=np.float32))[0]  # = a padded frame
    widths = []
    torch.manual_seed(1)
    for _ in range(5):
        masked = extractor(clip, sampling_rate=32000, augment=True)["input_values"][0]
        changed = masked != plain
        band = np.flatnonzero(changed.any(axis=1 - axis))
        if band.size:  # one contiguous band, entirely the fill value; nothing else touched
            assert band[-1] - band[0] + 1 == band.size < max_width
            assert ((masked[:, band] if axis == 1 else masked[band]) == fill).all()
        assert (masked[~changed] == plain[~changed]).all()
        widths.append(band.size)
    print(f"{kind} mask: changed widths over 5 calls {widths} (max_width {max_width})")
    assert max(widths) > 0


def test_augmentations_are_off_by_default_at_p0_and_in_a_plain_call():
    clips = [_birdsong(5), _birdsong(6)]
    plain = _extractor()(clips, sampling_rate=32000, return_tensors="np")["input_values"]
    torch.manual_seed(0)
    at_p0 = _extractor()(clips, sampling_rate=32000, return_tensors="np", augment=True)["input_values"]
    np.testing.assert_array_equal(at_p0, plain)
    birdset = _extractor(augmentations="birdset")
    np.testing.assert_array_equal(birdset(clips, sampling_rate=32000, return_tensors="np")["input_values"], plain)
    assert AudioMAEFeatureExtractor.training_call_kwargs == {"augment": True}


def test_augmentations_repeat_with_the_seed_and_save_with_the_extractor(tmp_path):
    clips = [_birdsong(7), _birdsong(8), _birdsong(9)]
    extractor = _extractor(augmentations="birdset", mix_probability=1.0, gain_probability=1.0)

    def run(seed):
        torch.manual_seed(seed)
        return extractor(clips, sampling_rate=32000, return_tensors="np", augment=True)["input_values"]

    np.testing.assert_array_equal(run(0), run(0))
    assert np.abs(run(0) - run(1)).max() > 0.01
    extractor.save_pretrained(tmp_path)
    loaded = AudioMAEFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == extractor.to_dict() and loaded.mix_probability == 1.0 and loaded.freq_mask_probability == 0.3
    torch.manual_seed(0)
    np.testing.assert_array_equal(loaded(clips, sampling_rate=32000, return_tensors="np", augment=True)["input_values"], run(0))


def test_registry_presets_and_bad_augmentation_settings():
    from hf_mae.registry import create_processor

    bird, audio = create_processor("birdmae-tiny"), create_processor("audiomae-tiny")
    assert (bird.mix_probability, bird.mix_snr_db, bird.mix_max_sources, bird.freq_mask_probability) == (0.3, [5.0, 25.0], 3, 0.0)
    assert audio.augmentations is None and audio.mix_probability == audio.freq_mask_probability == 0.0
    for kwargs, message in ((dict(augmentations="spec"), "augmentations"), (dict(gain_probability=1.5), "gain_probability"),
                            (dict(mix_snr_db=[30, 5]), "mix_snr_db"), (dict(mix_max_sources=0), "mix_max_sources"),
                            (dict(time_mask_max_width=-1), "time_mask_max_width")):
        with pytest.raises(ValueError, match=message):
            _extractor(**kwargs)


def test_pretraining_batches_are_featurised_together_so_mixing_fires(tmp_path):
    """The data pipeline hands a DataLoader batch of same-rate clips to the extractor in one call (the only way a
    mix can draw its sources from the batch), and a plain (non-training) access never augments."""
    from hf_mae.training.data import collate, load_image_dataset, with_model_inputs

    for index, frequency in enumerate((300, 700, 1100, 1500)):
        t = np.arange(4000) / 8000
        (tmp_path / "wavs").mkdir(exist_ok=True)
        _write_wav(tmp_path / "wavs" / f"{index}_tone_{index}.wav", 0.3 * np.sin(2 * np.pi * frequency * t), 8000)
    dataset = load_image_dataset(str(tmp_path / "wavs"))
    mixing = AudioMAEFeatureExtractor(max_length=64, mix_probability=1.0, mix_snr_db=[0.0, 0.0], mix_max_sources=1)
    plain = collate([with_model_inputs(dataset, mixing, with_labels=False)[i] for i in range(4)])["input_values"]
    torch.manual_seed(0)
    batched = with_model_inputs(dataset, mixing, with_labels=False, training=True).__getitems__([0, 1, 2, 3])
    mixed = collate(batched)["input_values"]
    assert mixed.shape == plain.shape == (4, 64, 128)
    assert all(not torch.allclose(mixed[i], plain[i]) for i in range(4))  # every clip got another one mixed in
    off = AudioMAEFeatureExtractor(max_length=64)
    same = collate(with_model_inputs(dataset, off, with_labels=False, training=True).__getitems__([0, 1, 2, 3]))
    torch.testing.assert_close(same["input_values"], collate([with_model_inputs(dataset, off, with_labels=False)[i]
                                                               for i in range(4)])["input_values"])  # fmt: skip
