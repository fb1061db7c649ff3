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
    """

    model_input_names = ["input_values"]

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
        **kwargs,
    ):
        kwargs.pop("return_attention_mask", None)
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
                 channel_reduction: str | None = None, **kwargs) -> BatchFeature:
        """Featurises one clip or a batch -> ``BatchFeature({"input_values": (batch, max_length, num_mel_bins)})``.

        Args:
            raw_speech: see the module docstring for the accepted forms.
            sampling_rate: the rate of ``raw_speech`` (Hz). Strongly recommended; without it the clips are assumed
                to be at ``self.sampling_rate`` (a warning says so, as in transformers).
            return_tensors: ``"pt"``, ``"np"`` or ``None`` (a list of arrays).
            channel_reduction: overrides ``self.channel_reduction`` for this call.
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

        features = []
        for index, clip in enumerate(clips):
            waveform = self._to_mono(clip, index, channel_reduction)
            if sampling_rate != self.sampling_rate:
                waveform = resample_audio(waveform, int(sampling_rate), int(self.sampling_rate))
            fbank = self._fbank(waveform)
            features.append(self.normalize(fbank) if self.do_normalize else fbank)
        if return_tensors is not None:
            features = np.stack(features)
        return BatchFeature({"input_values": features}, tensor_type=return_tensors)


__all__ = ["AudioMAEFeatureExtractor", "read_wav", "resample_audio"]
