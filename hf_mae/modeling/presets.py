"""Preset sizes shared by several methods' registry rows (the ``METHOD`` dict at the end of each modeling file).

Data only: the rows copy these into their presets, and ``hf_mae.registry`` reads the rows (see DESIGN.md, "adding a
method"). Remote-code rule: this file imports nothing.
"""

# CPU-sized ViT for tests and the quick start: 32x32 images, an 8x8 grid of 4x4 patches, 128-d x 4 / 64-d x 2
TINY = dict(
    image_size=32, patch_size=4, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
    decoder_hidden_size=64, decoder_num_hidden_layers=2, decoder_num_attention_heads=4, decoder_intermediate_size=256,
)
# TINY without a decoder (SimMIM's linear head, MP3's position classifier)
TINY_ENCODER = {key: value for key, value in TINY.items() if not key.startswith("decoder_")}
# TINY for spectrograms (Audio-MAE, Bird-MAE): their size is max_length x num_mel_bins, patches are 16x16
TINY_AUDIO = {key: value for key, value in TINY.items() if key not in ("image_size", "patch_size")}
# CPU-sized video ViT: 8 frames of 32x32 in tubelets of 2 frames x 8x8 pixels, a 4 x 4 x 4 grid of 64 tokens
TINY_VIDEO = dict(
    image_size=32, patch_size=8, num_frames=8, tubelet_size=2, hidden_size=128, num_hidden_layers=4,
    num_attention_heads=4, intermediate_size=512, decoder_hidden_size=64, decoder_num_hidden_layers=2,
    decoder_num_attention_heads=4, decoder_intermediate_size=256,
)
VIT = {  # encoder sizes of the paper's ViTs
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "huge": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120),
}

__all__ = ["TINY", "TINY_ENCODER", "TINY_AUDIO", "TINY_VIDEO", "VIT"]
