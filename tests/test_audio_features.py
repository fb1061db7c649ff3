"""The Audio-MAE feature extractor (Kaldi fbank parity with transformers' AST extractor, resampling, errors) and
audio folders in the data loader (FSDD's flat folder of wavs, class folders)."""

import wave

import numpy as np
import pytest
import torch
from conftest import shared_data
from transformers import ASTFeatureExtractor

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
