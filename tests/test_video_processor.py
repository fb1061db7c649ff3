"""The video processor: frame sampling (stride and segment, centred and random), consistent per-frame processing,
every input form, and decoding a clip that the test writes itself with PyAV."""

import numpy as np
import pytest
import torch

from hf_mae.processors.video_processing_mae import MAEVideoProcessor, read_video, sample_frame_indices

SMALL = dict(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}, do_normalize=False)


def brightness_clip(length=30, height=24, width=32):
    """(T, H, W, 3) uint8 frames whose constant value is 8 * t: a frame's mean names its index."""
    return np.stack([np.full((height, width, 3), 8 * t, np.uint8) for t in range(length)])


def frame_ids(pixel_values):
    """The source frame index of every output frame of a (B, T, C, H, W) batch processed without normalisation."""
    return (pixel_values.mean((2, 3, 4)) * 255 / 8).round().long().tolist()


def test_sample_frame_indices_by_definition():
    assert sample_frame_indices(30, 4, 3) == [10, 13, 16, 19]  # a 10-frame window centred in 30 frames
    assert sample_frame_indices(5, 4, 2) == [0, 2, 4, 4]  # too short: the last frame repeats
    assert sample_frame_indices(30, 3, frame_sampling="segment") == [5, 15, 25]  # middles of 3 segments
    torch.manual_seed(0)
    starts = {sample_frame_indices(30, 4, 3, random_sampling=True)[0] for _ in range(200)}
    assert starts == set(range(21))  # every start from 0 to 30 - 10
    for _ in range(50):
        indices = sample_frame_indices(30, 3, frame_sampling="segment", random_sampling=True)
        assert [i // 10 for i in indices] == [0, 1, 2]  # one frame inside each segment
    with pytest.raises(ValueError, match="frame_sampling"):
        sample_frame_indices(30, 4, frame_sampling="dense")
    with pytest.raises(ValueError, match="no frames"):
        sample_frame_indices(0, 4)


def test_every_input_form_gives_the_same_batch():
    clip = brightness_clip()
    processor = MAEVideoProcessor(num_frames=4, frame_stride=3, **SMALL)
    as_array = processor(clip, return_tensors="pt")["pixel_values"]
    assert as_array.shape == (1, 4, 3, 16, 16)
    assert frame_ids(as_array) == [[10, 13, 16, 19]]
    from PIL import Image

    forms = [list(clip), [Image.fromarray(f) for f in clip], torch.from_numpy(clip).permute(0, 3, 1, 2)]
    for form in forms:
        torch.testing.assert_close(processor(form, return_tensors="pt")["pixel_values"], as_array)
    batch = processor([clip, clip[::-1].copy()], return_tensors="pt")["pixel_values"]
    assert frame_ids(batch) == [[10, 13, 16, 19], [19, 16, 13, 10]]


def test_every_frame_gets_the_same_resize_crop_and_normalisation():
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (6, 24, 40, 3), dtype=np.uint8)
    processor = MAEVideoProcessor(num_frames=6, frame_stride=1, size={"shortest_edge": 16},
                                  crop_size={"height": 16, "width": 16})
    video = processor(clip, return_tensors="pt")["pixel_values"][0]
    from hf_mae.processors.image_processing_mae import MAEImageProcessor

    per_image = MAEImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
                                  do_center_crop=True, resample=2, default_to_square=False)
    torch.testing.assert_close(video, per_image(list(clip), return_tensors="pt")["pixel_values"])


def test_bad_arguments_raise_clear_errors():
    processor = MAEVideoProcessor(**SMALL)
    with pytest.raises(ValueError, match="num_frames"):
        processor(brightness_clip(), num_frames=0)
    with pytest.raises(ValueError, match="frame_sampling"):
        processor(brightness_clip(), frame_sampling="dense")
    with pytest.raises(TypeError, match="videos"):
        processor(3)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video("missing.mp4")


def test_decodes_a_clip_written_with_pyav(tmp_path):
    av = pytest.importorskip("av", reason="PyAV (`pip install av`) decodes video files")
    path = tmp_path / "clip.mp4"
    clip = brightness_clip()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for frame in clip:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    decoded = read_video(path)
    assert len(decoded) == 30 and decoded[0].shape == (24, 32, 3)
    assert np.abs(np.array([f.mean() for f in decoded]) - 8 * np.arange(30)).max() < 4  # lossy codec
    processor = MAEVideoProcessor(num_frames=4, frame_stride=3, **SMALL)
    from_file = processor(str(path), return_tensors="pt")["pixel_values"]
    assert frame_ids(from_file) == [[10, 13, 16, 19]]
    torch.testing.assert_close(from_file, processor(clip, return_tensors="pt")["pixel_values"], rtol=0, atol=4 / 255)


def test_a_missing_pyav_gives_a_clear_error(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "av", None)  # what `import av` sees when PyAV is not installed
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(ImportError, match="pip install av"):
        read_video(tmp_path / "clip.mp4")
    with pytest.raises(ImportError, match="pip install av"):
        MAEVideoProcessor(**SMALL)(str(tmp_path / "clip.mp4"))
    # frames need no decoder
    assert MAEVideoProcessor(num_frames=2, frame_stride=1, **SMALL)(brightness_clip(4))["pixel_values"].shape == (1, 2, 3, 16, 16)
