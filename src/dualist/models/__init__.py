"""Models: the dual-encoder student, the cross-encoder teacher and the backbones they wrap.

Both are ``torch.nn.Module``s around a Hugging Face encoder, with a training path (tensors with
gradients) and a fast inference path (numpy arrays), and both save to and load from
``save_pretrained``-style folders without pickle (docs/architecture.md §2). A saved :class:`DualEncoder`
loads in sentence-transformers unchanged; a saved :class:`CrossEncoder` is a Hugging Face
sequence-classification folder.
"""

from __future__ import annotations

from dualist.models.backbone import MODEL_ALIASES, ModelLoadError, load_backbone, resolve_model
from dualist.models.cross_encoder import CrossEncoder, CrossEncoderConfig
from dualist.models.frozen_prefix import PrefixCache
from dualist.models.dual_encoder import DualEncoder, DualEncoderConfig, similarity_scores

__all__ = [
    "DualEncoder",
    "DualEncoderConfig",
    "CrossEncoder",
    "CrossEncoderConfig",
    "similarity_scores",
    "PrefixCache",
    "MODEL_ALIASES",
    "ModelLoadError",
    "resolve_model",
    "load_backbone",
]
