"""Audio feature extractor for Audio-MAE and Bird-MAE: Kaldi-compatible log-mel filterbanks, normalised and padded
to a fixed number of frames; ``input_values`` of shape (batch, max_length, num_mel_bins), as transformers'
``ASTFeatureExtractor`` returns (a 1-channel time x frequency image for the model).

The filterbank follows Kaldi's ``compute-fbank-feats`` (and ``torchaudio.compliance.kaldi.fbank``) with the
settings of the official Audio-MAE data pipeline: 25 ms Hann ("hanning") windows every 10 ms, no dither, per-frame
DC removal, pre-emphasis 0.97, the FFT size rounded up to a power of two, power spectrum, HTK/Kaldi mel scale with
triangles in mel space from 20 Hz to Nyquist, natural log with Kaldi's floor (float32 epsilon). Window, hop and FFT
sizes are derived from ``sampling_rate``: 400/160/512 samples at 16 kHz, 800/320/1024 at 32 kHz (Bird-MAE).

Inputs, one waveform or a batch: a 1-D array / list of floats / tensor is ONE mono clip; a list of those, or a 2-D
numpy array (batch, samples), is a batch (as ``ASTFeatureExtractor``). A multi-channel clip is a 2-D array inside a
list, (channels, samples) or (samples, channels) (the smaller axis is taken as channels), and needs
``channel_reduction="mean"`` or ``"first"``. Integer PCM (e.g. int16) is scaled to [-1, 1].

Clips at another rate are resampled to ``sampling_rate`` (``resample=True``) with :func:`resample_audio`.

Training-time augmentations (Bird-MAE's, off by default; ``augment=True`` in a call switches them on, which is what
``hf-mae pretrain`` passes through ``training_call_kwargs``). Each one fires per clip with its own probability; all
randomness comes from torch's global generator (seed it with ``torch.manual_seed``; DataLoader workers get their
own streams). In order, on the waveform at ``sampling_rate``:

- mix (BirdSet's ``MultilabelMix``): 1..``mix_max_sources`` OTHER clips of the same call (the count drawn once per
  call, the clips per clip), each RMS-normalised and added at an SNR from ``mix_snr_db`` relative to the running
  mix; a source is cut or zero-padded to the clip's length. Only the waveform is mixed: BirdSet's multilabel
  "union" of the targets is left to the caller, so single-label data keeps the first clip's label. A call with
  one clip has nothing to mix with.
- coloured noise (``torch_audiomentations.AddColoredNoise``): power spectral density ~ 1 / f^exponent with the
  exponent from ``colored_noise_exponent`` (0 white, 1 pink, 2 brown, -2 violet), at an SNR from
  ``colored_noise_snr_db``.
- gain: x 10^(dB / 20) with dB from ``gain_db``.

Then on the log-mel filterbank, before normalisation (as the official ``transforms.py`` applies torchaudio's
``FrequencyMasking`` / ``TimeMasking``): one band of ``[0, max_width)`` mel bins / frames set to
``padding_value``, so after normalisation a masked band equals a padded frame. BirdSet's background-noise
augmentation (a corpus of no-call recordings) is out of scope.

Recipes (``augmentations=``): ``"birdmae"`` is the Bird-MAE paper's pre-training config
(``pretrain_melbank_birdset.yaml`` + ``pretrain_xcl_wave_*.yaml``: mix only, p 0.3, SNR 5-25 dB, up to 3 sources;
no SpecAugment); ``"birdset"`` is BirdSet's ``melbank_birdset.yaml`` (mix p 0.9 at 2-30 dB, coloured noise p 0.2,
gain p 0.2, frequency / time masking p 0.3 of up to 50 bins / 100 frames). Any attribute below overrides the recipe.

Remote-code rule: this file imports only the standard library, numpy, torch and transformers.
"""

from __future__ import annotations

import functools
import math
import warnings
import wave

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import logging

logger = logging.get_logger(__name__)

CHANNEL_REDUCTIONS = ("mean", "first")
KALDI_LOG_FLOOR = float(np.finfo(np.float32).eps)  # Kaldi's floor before the log: 1.1920929e-07

# every augmentation attribute with its value when no recipe sets it: all off, BirdSet's ranges
AUGMENTATION_DEFAULTS = {
    "mix_probability": 0.0,
    "mix_snr_db": [2.0, 30.0],
    "mix_max_sources": 3,
    "colored_noise_probability": 0.0,
    "colored_noise_exponent": [-2.0, 2.0],
    "colored_noise_snr_db": [3.0, 30.0],
    "gain_probability": 0.0,
    "gain_db": [-18.0, 6.0],
    "freq_mask_probability": 0.0,
    "freq_mask_max_width": 50,
    "time_mask_probability": 0.0,
    "time_mask_max_width": 100,
}
AUGMENTATION_RECIPES = {
    "none": {},
    # Bird-MAE pre-training (DBD-research-group/Bird-MAE configs/experiment/paper/pretrain/pretrain_xcl_wave_*.yaml)
    "birdmae": {"mix_probability": 0.3, "mix_snr_db": [5.0, 25.0], "mix_max_sources": 3},
    # BirdSet's transform (configs/data/transform/melbank_birdset.yaml), without background noise
    "birdset": {
        "mix_probability": 0.9, "colored_noise_probability": 0.2, "gain_probability": 0.2,
        "freq_mask_probability": 0.3, "time_mask_probability": 0.3,
    },
}


def resample_audio(waveform: np.ndarray, orig_sampling_rate: int, target_sampling_rate: int,
                   zero_crossings: int = 6, rolloff: float = 0.99) -> np.ndarray:
    """Band-limited resampling of a mono waveform (samples,) -> (ceil(samples * target / orig),) with a Hann-windowed
    sinc, in polyphase form: the rate ratio is reduced to ``up / down`` and each of the ``up`` output phases is one
    filter, applied with a strided ``conv1d`` (no scipy/torchaudio needed).

    The low-pass cut-off is ``rolloff`` x the lower Nyquist frequency and the kernel spans ``zero_crossings`` zero
    crossings of the sinc on each side. Accuracy (measured in the tests): a 440 Hz sine resampled 8 kHz -> 16 kHz
    or 44.1 kHz -> 16 kHz stays within 5e-4 of the exact sine away from the edges (the first and last
    ~``zero_crossings`` input samples see zero padding); content above ``rolloff`` x the new Nyquist is
    attenuated (anti-aliasing), not removed perfectly.
    """
    for name, value in (("orig_sampling_rate", orig_sampling_rate), ("target_sampling_rate", target_sampling_rate)):
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name} must be a positive integer (Hz), got {value!r}")
    common = math.gcd(int(orig_sampling_rate), int(target_sampling_rate))
    down, up = int(orig_sampling_rate) // common, int(target_sampling_rate) // common
    waveform = np.asarray(waveform, dtype=np.float32)
    if up == down:
        return waveform
    # all times below are in input-sample periods; output sample n sits at n * down / up
    cutoff = 0.5 * min(1.0, up / down) * rolloff  # cycles per input sample
    half_width = zero_crossings / (2 * cutoff)
    reach = int(math.ceil(half_width))
    taps = torch.arange(-reach, down + reach, dtype=torch.float64)  # input offsets around each block start
    phases = torch.arange(up, dtype=torch.float64)[:, None] * down / up
    t = phases - taps[None, :]  # (up, taps): distance from output phase to input sample
    window = torch.where(t.abs() <= half_width, torch.cos(math.pi * t / (2 * half_width)) ** 2, torch.zeros_like(t))
    kernels = (2 * cutoff * torch.sinc(2 * cutoff * t) * window).float()  # (up, taps)
    length = waveform.shape[-1]
    out_length = int(math.ceil(length * up / down))
    blocks = int(math.ceil(length / down))
    padded = torch.nn.functional.pad(torch.from_numpy(waveform)[None, None], (reach, reach + blocks * down - length + down))
    out = torch.nn.functional.conv1d(padded, kernels[:, None, :], stride=down)  # (1, up, >= blocks)
    return out[0, :, :blocks].T.reshape(-1)[:out_length].numpy()


def read_wav(path) -> tuple[np.ndarray, int]:
    """Reads a PCM .wav file with the standard-library ``wave`` module -> (float32 samples in [-1, 1] of shape
    (samples,) for mono or (samples, channels), sampling rate in Hz)."""
    with wave.open(str(path), "rb") as file:
        channels, width, rate = file.getnchannels(), file.getsampwidth(), file.getframerate()
        raw = file.readframes(file.getnframes())
    if width == 1:  # 8-bit PCM is unsigned
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width in (2, 4):
        dtype = np.int16 if width == 2 else np.int32
        samples = np.frombuffer(raw, dtype=f"<i{width}").astype(np.float32) / float(-np.iinfo(dtype).min)
    elif width == 3:  # 24-bit: place the 3 bytes in the top of an int32
        bytes3 = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        as_int = (bytes3[:, 0].astype(np.int32) << 8) | (bytes3[:, 1].astype(np.int32) << 16) | (bytes3[:, 2].astype(np.int32) << 24)
        samples = as_int.astype(np.float32) / 2.0**31
    else:
        raise ValueError(f"path {str(path)!r}: unsupported sample width {width} bytes (allowed: 1, 2, 3, 4)")
    return (samples if channels == 1 else samples.reshape(-1, channels)), rate


@functools.lru_cache(maxsize=8)
def _kaldi_mel_filters(fft_length: int, num_mel_bins: int, low: float, high: float, sampling_rate: int) -> np.ndarray:
    """Kaldi's mel filterbank (fft_length // 2 + 1, num_mel_bins), built once per setting."""
    with warnings.catch_warnings():
        # with 128 bins on a 512-point FFT the lowest triangles fall between FFT bins and are all zero, as in Kaldi
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
        filters = mel_filter_bank(
            num_frequency_bins=fft_length // 2 + 1,
            num_mel_filters=num_mel_bins,
            min_frequency=low,
            max_frequency=high,
            sampling_rate=sampling_rate,
            norm=None,
            mel_scale="kaldi",
            triangularize_in_mel_space=True,
        )
    filters.flags.writeable = False  # shared by every call
    return filters


def _rms(waveform: torch.Tensor) -> torch.Tensor:
    return waveform.pow(2).mean().sqrt()


def _uniform(low_high) -> float:
    """A draw from U[low, high) with torch's global generator."""
    low, high = low_high
    return float(low + (high - low) * torch.rand(()))


def colored_noise(num_samples: int, sampling_rate: int, exponent: float) -> torch.Tensor:
    """Gaussian noise (num_samples,) with power spectral density ~ 1 / f^exponent, no DC, RMS 1."""
    spectrum = torch.fft.rfft(torch.randn(num_samples, dtype=torch.float64))
    frequencies = torch.fft.rfftfreq(num_samples, 1.0 / sampling_rate, dtype=torch.float64)
    amplitude = torch.zeros_like(frequencies)
    amplitude[1:] = frequencies[1:] ** (-exponent / 2)  # amplitude ~ f^(-exponent/2) -> power ~ f^-exponent
    noise = torch.fft.irfft(spectrum * amplitude, n=num_samples)
    return noise / _rms(noise).clamp_min(1e-12)


class AudioMAEFeatureExtractor(SequenceFeatureExtractor):
    r"""Kaldi-compatible log-mel filterbank features for Audio-MAE / Bird-MAE (see the module docstring).

    Args:
        sampling_rate: the rate the model expects (Hz); window/hop/FFT sizes follow from it.
        num_mel_bins: mel filters (frequency axis of ``input_values``).
        max_length: frames after padding with ``padding_value`` / cutting (time axis of ``input_values``).
        do_normalize, mean, std: ``(fbank - mean) / (2 * std)``; defaults are Audio-MAE's AudioSet statistics.
        frame_length_ms, frame_shift_ms, preemphasis, min_frequency, max_frequency: Kaldi fbank options
            (``max_frequency=None`` is Nyquist).
        resample: resample clips given at another ``sampling_rate`` (else that is an error).
        channel_reduction: ``None`` (multi-channel input is an error), ``"mean"`` or ``"first"``.
        augmentations: ``None`` / ``"none"``, ``"birdmae"`` or ``"birdset"``: the recipe (see the module docstring)
            that sets the augmentation attributes below not given explicitly; they act only in ``augment=True`` calls.
        mix_probability, mix_snr_db, mix_max_sources: per-clip p, (min, max) SNR in dB, most sources per clip.
        colored_noise_probability, colored_noise_exponent, colored_noise_snr_db: p, (min, max) spectral exponent,
            (min, max) SNR in dB.
        gain_probability, gain_db: p, (min, max) gain in dB.
        freq_mask_probability, freq_mask_max_width, time_mask_probability, time_mask_max_width: p and the width
            bound (exclusive) of one frequency band in mel bins / one time band in frames.
    """

    model_input_names = ["input_values"]
    training_call_kwargs = {"augment": True}  # what ``hf-mae pretrain`` passes (see training/data.py)

    @classmethod
    def from_model_config(cls, config, **settings):
        """The extractor for ``config``: its sampling rate, mel bins, frame count and normalisation statistics, plus
        the fixed ``settings`` (e.g. ``augmentations``)."""
        return cls(sampling_rate=config.sampling_rate, num_mel_bins=config.num_mel_bins, max_length=config.max_length,
                   mean=config.mean, std=config.std, **settings)

    def __init__(
        self,
        feature_size=1,
        sampling_rate=16000,
        num_mel_bins=128,
        max_length=1024,
        padding_value=0.0,
        do_normalize=True,
        mean=-4.2677393,
        std=4.5689974,
        frame_length_ms=25.0,
        frame_shift_ms=10.0,
        preemphasis=0.97,
        min_frequency=20.0,
        max_frequency=None,
        resample=True,
        channel_reduction=None,
        augmentations=None,
        **kwargs,
    ):
        kwargs.pop("return_attention_mask", None)
        if augmentations is not None and augmentations not in AUGMENTATION_RECIPES:
            raise ValueError(f"augmentations must be None or one of {sorted(AUGMENTATION_RECIPES)}, got {augmentations!r}")
        recipe = {**AUGMENTATION_DEFAULTS, **AUGMENTATION_RECIPES[augmentations or "none"]}
        augmentation_settings = {name: kwargs.pop(name, default) for name, default in recipe.items()}
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value,
                         return_attention_mask=False, **kwargs)
        if channel_reduction not in (None,) + CHANNEL_REDUCTIONS:
            raise ValueError(f"channel_reduction must be None, 'mean' or 'first', got {channel_reduction!r}")
        if not isinstance(max_length, int) or max_length <= 0:
            raise ValueError(f"max_length must be a positive number of frames, got {max_length!r}")
        self.num_mel_bins = num_mel_bins
        self.max_length = max_length
        self.do_normalize = do_normalize
        self.mean = mean
        self.std = std
        self.frame_length_ms = frame_length_ms
        self.frame_shift_ms = frame_shift_ms
        self.preemphasis = preemphasis
        self.min_frequency = min_frequency
        self.max_frequency = max_frequency
        self.resample = resample
        self.channel_reduction = channel_reduction
        self.augmentations = augmentations
        self._check_augmentations(augmentation_settings)
        for name, value in augmentation_settings.items():
            setattr(self, name, list(value) if isinstance(value, tuple) else value)  # lists: JSON round trip

    @staticmethod
    def _check_augmentations(settings: dict):
        for name, value in settings.items():
            if name.endswith("_probability"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                    raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
            elif name in ("mix_max_sources", "freq_mask_max_width", "time_mask_max_width"):
                low = 1 if name == "mix_max_sources" else 0
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                    raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
            elif not (isinstance(value, (list, tuple)) and len(value) == 2
                      and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value) and value[0] <= value[1]):
                raise ValueError(f"{name} must be a pair [min, max] of finite numbers with min <= max, got {value!r}")

    @property
    def frame_sizes(self) -> tuple[int, int, int]:
        """(window, hop, FFT) lengths in samples, as Kaldi derives them: truncated ms x rate, FFT the next power of 2."""
        window = int(self.sampling_rate * self.frame_length_ms / 1000)
        hop = int(self.sampling_rate * self.frame_shift_ms / 1000)
        return window, hop, 1 << (window - 1).bit_length()

    def _fbank(self, waveform: np.ndarray) -> np.ndarray:
        """(samples,) float32 -> log-mel filterbank (max_length, num_mel_bins), cut or padded with ``padding_value``."""
        window_length, hop, fft_length = self.frame_sizes
        if waveform.shape[0] < window_length:  # Kaldi (snip_edges) yields no frame for a clip shorter than a window
            raise ValueError(
                f"raw_speech: a clip of {waveform.shape[0]} samples is shorter than one {self.frame_length_ms} ms "
                f"window ({window_length} samples at {self.sampling_rate} Hz)"
            )
        mel_filters = _kaldi_mel_filters(
            fft_length, self.num_mel_bins, self.min_frequency, self.max_frequency or self.sampling_rate / 2,
            self.sampling_rate,
        )
        fbank = spectrogram(
            waveform,
            window_function(window_length, "hann", periodic=False),  # Kaldi's "hanning" is the symmetric Hann
            frame_length=window_length,
            hop_length=hop,
            fft_length=fft_length,
            power=2.0,
            center=False,  # Kaldi's snip_edges: frames start at sample 0, no padding
            preemphasis=self.preemphasis,
            mel_filters=mel_filters,
            log_mel="log",
            mel_floor=KALDI_LOG_FLOOR,
            remove_dc_offset=True,
        ).T.astype(np.float32)
        out = np.full((self.max_length, self.num_mel_bins), self.padding_value, dtype=np.float32)
        frames = min(self.max_length, fbank.shape[0])
        out[:frames] = fbank[:frames]
        return out

    def augment_waveforms(self, waveforms: list[np.ndarray]) -> list[np.ndarray]:
        """Mix, coloured noise and gain (module docstring) on mono float32 clips [(samples_i,)] at
        ``sampling_rate`` -> new clips of the same lengths. Mix sources are the un-augmented clips."""
        originals = [torch.from_numpy(waveform).double() for waveform in waveforms]
        num_sources = int(torch.randint(1, self.mix_max_sources + 1, ()))  # once per call, as BirdSet's Mix
        out = []
        for index, clip in enumerate(originals):
            others = [i for i in range(len(originals)) if i != index]
            if others and float(torch.rand(())) < self.mix_probability:
                snr_db = _uniform(self.mix_snr_db)  # one SNR per clip, for all its sources
                mixed = clip.clone()
                for _ in range(num_sources):
                    source = originals[others[int(torch.randint(len(others), ()))]][: clip.shape[0]]
                    source = torch.nn.functional.pad(source, (0, clip.shape[0] - source.shape[0]))
                    scale = _rms(mixed) / (_rms(source).clamp_min(1e-12) * 10 ** (snr_db / 20))
                    mixed = mixed + scale * source
                clip = mixed
            if float(torch.rand(())) < self.colored_noise_probability:
                noise = colored_noise(clip.shape[0], self.sampling_rate, _uniform(self.colored_noise_exponent))
                clip = clip + noise * _rms(clip) / 10 ** (_uniform(self.colored_noise_snr_db) / 20)
            if float(torch.rand(())) < self.gain_probability:
                clip = clip * 10 ** (_uniform(self.gain_db) / 20)
            out.append(clip.float().numpy())
        return out

    def augment_spectrogram(self, fbank: np.ndarray) -> np.ndarray:
        """Frequency and time masking (module docstring) of one log-mel fbank (frames, mel bins), before
        normalisation: each band [start, start + width), width in [0, max_width), is set to ``padding_value``."""
        fbank = fbank.copy()
        for axis, probability, max_width in ((1, self.freq_mask_probability, self.freq_mask_max_width),
                                             (0, self.time_mask_probability, self.time_mask_max_width)):
            if float(torch.rand(())) < probability:
                size = fbank.shape[axis]
                width = int(torch.rand(()) * min(max_width, size))
                start = int(torch.randint(size - width + 1, ()))
                index = (slice(None), slice(start, start + width)) if axis == 1 else slice(start, start + width)
                fbank[index] = self.padding_value
        return fbank

    def normalize(self, fbank: np.ndarray) -> np.ndarray:
        return (fbank - self.mean) / (2 * self.std)

    def _to_mono(self, clip, index: int, channel_reduction) -> np.ndarray:
        """One clip (any array-like) -> finite float32 (samples,), integer PCM scaled to [-1, 1]."""
        array = clip.detach().cpu().numpy() if isinstance(clip, torch.Tensor) else np.asarray(clip)
        if array.dtype.kind in "iu":
            info = np.iinfo(array.dtype)
            array = (array.astype(np.float64) - (info.max + 1 if array.dtype.kind == "u" else 0)) / float(info.max + 1)
        elif array.dtype.kind != "f":
            raise TypeError(f"raw_speech[{index}]: expected numbers, got an array of dtype {array.dtype}")
        if array.ndim == 2:
            if channel_reduction is None:
                raise ValueError(
                    f"raw_speech[{index}] has 2 dimensions {tuple(array.shape)}: multi-channel audio needs "
                    f"channel_reduction='mean' or 'first' (or pass mono clips)"
                )
            channels_axis = 0 if array.shape[0] <= array.shape[1] else 1
            array = array.mean(axis=channels_axis) if channel_reduction == "mean" else np.take(array, 0, channels_axis)
        if array.ndim != 1:
            raise ValueError(f"raw_speech[{index}]: expected a 1-D waveform, got shape {tuple(array.shape)}")
        if array.size == 0:
            raise ValueError(f"raw_speech[{index}] is empty: a clip needs at least one window of samples")
        if not np.isfinite(array).all():
            raise ValueError(f"raw_speech[{index}] contains NaN or infinite values")
        return array.astype(np.float32)

    def __call__(self, raw_speech, sampling_rate: int | None = None, return_tensors=None,
                 channel_reduction: str | None = None, augment: bool = False, **kwargs) -> BatchFeature:
        """Featurises one clip or a batch -> ``BatchFeature({"input_values": (batch, max_length, num_mel_bins)})``.

        Args:
            raw_speech: see the module docstring for the accepted forms.
            sampling_rate: the rate of ``raw_speech`` (Hz). Strongly recommended; without it the clips are assumed
                to be at ``self.sampling_rate`` (a warning says so, as in transformers).
            return_tensors: ``"pt"``, ``"np"`` or ``None`` (a list of arrays).
            channel_reduction: overrides ``self.channel_reduction`` for this call.
            augment: apply the training-time augmentations with this extractor's probabilities (module docstring).
        """
        channel_reduction = channel_reduction if channel_reduction is not None else self.channel_reduction
        if channel_reduction not in (None,) + CHANNEL_REDUCTIONS:
            raise ValueError(f"channel_reduction must be None, 'mean' or 'first', got {channel_reduction!r}")
        if sampling_rate is None:
            logger.warning(
                f"It is strongly recommended to pass the `sampling_rate` argument to `{self.__class__.__name__}()`; "
                f"assuming {self.sampling_rate} Hz. Failing to do so can result in silent errors."
            )
            sampling_rate = self.sampling_rate
        if not isinstance(sampling_rate, (int, np.integer)) or isinstance(sampling_rate, bool) or sampling_rate <= 0:
            raise ValueError(f"sampling_rate must be a positive integer (Hz), got {sampling_rate!r}")
        if sampling_rate != self.sampling_rate and not self.resample:
            raise ValueError(
                f"sampling_rate is {sampling_rate} Hz but this feature extractor expects {self.sampling_rate} Hz and "
                f"resample=False; resample the audio first or set resample=True"
            )

        if isinstance(raw_speech, (np.ndarray, torch.Tensor)):
            if raw_speech.ndim > 2:
                raise ValueError(f"raw_speech: expected (samples,) or (batch, samples), got shape {tuple(raw_speech.shape)}")
            clips = list(raw_speech) if raw_speech.ndim == 2 else [raw_speech]
        elif isinstance(raw_speech, (list, tuple)):
            if len(raw_speech) == 0:
                raise ValueError("raw_speech is empty: pass a waveform or a list of waveforms")
            batched = isinstance(raw_speech[0], (np.ndarray, torch.Tensor, list, tuple))
            clips = list(raw_speech) if batched else [raw_speech]
        else:
            raise TypeError(f"raw_speech must be an array, a tensor or a list of them, got {type(raw_speech).__name__}")

        waveforms = []
        for index, clip in enumerate(clips):
            waveform = self._to_mono(clip, index, channel_reduction)
            if sampling_rate != self.sampling_rate:
                waveform = resample_audio(waveform, int(sampling_rate), int(self.sampling_rate))
            waveforms.append(waveform)
        if augment:
            waveforms = self.augment_waveforms(waveforms)
        features = []
        for waveform in waveforms:
            fbank = self._fbank(waveform)
            if augment:
                fbank = self.augment_spectrogram(fbank)
            features.append(self.normalize(fbank) if self.do_normalize else fbank)
        if return_tensors is not None:
            features = np.stack(features)
        return BatchFeature({"input_values": features}, tensor_type=return_tensors)


__all__ = ["AUGMENTATION_RECIPES", "AudioMAEFeatureExtractor", "colored_noise", "read_wav", "resample_audio"]
