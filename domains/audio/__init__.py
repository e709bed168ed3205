"""Audio domain: waveforms from folders, tables or the Hub; views for contrastive, masked and CPC
methods; wav2vec2-family encoders that load with plain ``transformers``. See ``domains.audio.domain``.
"""

from domains.audio.config import AudioConfig
from domains.audio.domain import AudioDomain
from domains.audio.encoders import ARCHITECTURES, W2V_BERT_PRESETS, WAV2VEC2_PRESETS, AudioEncoder, build_audio_encoder
from domains.audio.frames import IGNORE_INDEX, FrameGeometry, map_frame_labels, pool_frames
from domains.audio.loading import decode_clip, load_audio_rows, read_frame_labels

__all__ = [
    "AudioDomain",
    "AudioConfig",
    "AudioEncoder",
    "build_audio_encoder",
    "ARCHITECTURES",
    "WAV2VEC2_PRESETS",
    "W2V_BERT_PRESETS",
    "FrameGeometry",
    "IGNORE_INDEX",
    "map_frame_labels",
    "pool_frames",
    "decode_clip",
    "load_audio_rows",
    "read_frame_labels",
]
