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


def test_call_time_settings_override_the_processor():
    clip = brightness_clip()
    processor = MAEVideoProcessor(num_frames=4, frame_stride=3, **SMALL)
    plain = processor(clip, return_tensors="pt")["pixel_values"]
    normalised = processor(clip, do_normalize=True, return_tensors="pt")["pixel_values"]
    mean = torch.tensor(processor.image_mean).view(1, 1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 1, 3, 1, 1)
    torch.testing.assert_close(normalised, (plain - mean) / std)
    assert processor(clip, size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8},
                     return_tensors="pt")["pixel_values"].shape == (1, 4, 3, 8, 8)
    assert isinstance(processor(clip, return_tensors="np")["pixel_values"], np.ndarray)


def test_do_sample_frames_false_keeps_every_frame():
    processor = MAEVideoProcessor(num_frames=4, frame_stride=3, **SMALL)
    every = processor(brightness_clip(6), do_sample_frames=False, return_tensors="pt")["pixel_values"]
    assert frame_ids(every) == [list(range(6))]
    with pytest.raises(ValueError, match="equal lengths"):
        processor([brightness_clip(6), brightness_clip(5)], do_sample_frames=False)
    with pytest.raises(TypeError, match="do_sample_frames"):
        processor(brightness_clip(6), do_sample_frames="yes")


# ------------------------------------------------------------------ transformers' video-classification pipeline


@pytest.fixture(scope="module")
def video_classifier(tmp_path_factory):
    """(model, processor, clip path): a videomae-tiny classifier and a 30-frame synthetic clip (sampling picks 8 of
    them 4 apart, so a pipeline that read frames 0-7 would see other frames)."""
    pytest.importorskip("av", reason="the video pipeline decodes files with PyAV")
    import hf_mae
    from synthetic_video import moving_square, write_clip

    torch.manual_seed(0)
    model = hf_mae.create_model("videomae-tiny", task="video-classification", num_labels=3).eval()
    processor = hf_mae.create_processor("videomae-tiny")
    path = write_clip(tmp_path_factory.mktemp("video") / "clip.mp4", moving_square("right", frames=30, size=40))
    assert (processor.num_frames, processor.frame_stride) == (8, 4)
    return model, processor, path


def _pipeline_logits(pipe, path, num_labels) -> torch.Tensor:
    scores = {d["label"]: d["score"] for d in pipe(str(path), function_to_apply="none", top_k=num_labels)}
    return torch.tensor([scores[pipe.model.config.id2label[i]] for i in range(num_labels)])


def test_video_pipeline_samples_like_the_processor(video_classifier, tmp_path):
    import hf_mae
    from hf_mae.auto import register_video_processor
    from transformers import pipeline
    from transformers.models.auto.video_processing_auto import AutoVideoProcessor

    model, processor, path = video_classifier
    register_video_processor(hf_mae.HfVideoMAEConfig, MAEVideoProcessor)  # a no-op once hf_mae's import did it
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)  # preprocessor_config.json, as every saved folder has it
    assert type(AutoVideoProcessor.from_pretrained(tmp_path)) is MAEVideoProcessor
    pipe = pipeline("video-classification", model=str(tmp_path))
    assert type(pipe.video_processor) is MAEVideoProcessor  # not the deprecated image-processor path
    with torch.no_grad():
        expected = model(**processor(str(path), return_tensors="pt")).logits[0]
    torch.testing.assert_close(_pipeline_logits(pipe, path, 3), expected, rtol=0, atol=1e-5)


PIPELINE_CHILD = r'''
import json, sys
sys.modules["hf_mae"] = None  # an import of hf_mae now raises ImportError
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("__editable__")]
import torch
from transformers import pipeline
job = json.load(open("job.json"))
pipe = pipeline("video-classification", model=job["folder"], trust_remote_code=True)
scores = {d["label"]: d["score"] for d in pipe(job["video"], function_to_apply="none", top_k=job["num_labels"])}
json.dump({"module": type(pipe.video_processor).__module__,
           "logits": [scores[pipe.model.config.id2label[i]] for i in range(job["num_labels"])]},
          open("out.json", "w"))
'''


def test_video_pipeline_as_remote_code_samples_like_the_processor(video_classifier, tmp_path):
    """transformers alone (hf_mae not importable, as in tests/remote_check.py) runs the pipeline on the saved code."""
    import json
    import os
    import subprocess
    import sys

    from hf_mae.hub import save_pretrained_with_code

    model, processor, path = video_classifier
    folder = save_pretrained_with_code(model, tmp_path / "model", processor)
    work = tmp_path / "child"
    work.mkdir()
    (work / "job.json").write_text(json.dumps({"folder": str(folder), "video": str(path), "num_labels": 3}))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    env.pop("PYTHONPATH", None)
    env.pop("HF_MODULES_CACHE", None)
    child = subprocess.run([sys.executable, "-I", "-c", PIPELINE_CHILD], cwd=work, env=env, capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-4000:]
    out = json.loads((work / "out.json").read_text())
    assert out["module"].startswith("transformers_modules.")  # the saved code ran, not hf_mae
    with torch.no_grad():
        expected = model(**processor(str(path), return_tensors="pt")).logits[0]
    torch.testing.assert_close(torch.tensor(out["logits"]), expected, rtol=0, atol=1e-5)


def test_a_processor_saved_before_do_sample_frames_loads(tmp_path):
    import json

    processor = MAEVideoProcessor(num_frames=4, frame_stride=3, **SMALL)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved.pop("do_sample_frames") is True
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(saved))  # the file as earlier versions wrote it
    loaded = MAEVideoProcessor.from_pretrained(tmp_path)
    assert loaded.do_sample_frames is True
    torch.testing.assert_close(loaded(brightness_clip(), return_tensors="pt")["pixel_values"],
                               processor(brightness_clip(), return_tensors="pt")["pixel_values"])
