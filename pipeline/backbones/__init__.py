"""Spatial backbones for the extract stage: VGGFace (Keras 3 rebuild + released weights), dlib descriptor, pixels."""

from pipeline.backbones.registry import BACKBONES, RANDOM_LABEL, Backbone, build_backbone

__all__ = ["BACKBONES", "RANDOM_LABEL", "Backbone", "build_backbone"]
