"""dlib's 128-d face descriptor (ResNet, shipped in ``face-recognition-models``) applied to face ROI crops.

Each crop is aligned the way dlib expects: the 5-point landmark predictor is fitted inside the crop and
``dlib.get_face_chip`` cuts the 150x150 chip, which the network embeds (all chips of a batch in one call).
"""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np

from pipeline.backbones.pixels import as_rgb
from pipeline.media.faces import model_path
from pipeline.storage.atomic import file_sha256

DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
CHIP_SIZE, CHIP_PADDING, DIM = 150, 0.25, 128


class DlibDescriptor:
    """128-d dlib face descriptors of face ROI crops (RGB), one per crop."""

    def __init__(self, descriptor_path: Path | str | None = None, num_jitters: int = 0) -> None:
        self.descriptor_path = Path(descriptor_path) if descriptor_path else model_path(DESCRIPTOR_FILE)
        self.num_jitters = num_jitters
        self.name, self.dim = "dlib", DIM
        self.weights_label = f"sha256:{file_sha256(self.descriptor_path)}"
        self._net = dlib.face_recognition_model_v1(str(self.descriptor_path))
        self._predictor = dlib.shape_predictor(str(model_path(PREDICTOR_FILE)))

    def chip(self, crop: np.ndarray) -> np.ndarray:
        """The aligned 150x150 chip of one RGB face crop (5-point fit inside the whole crop)."""
        height, width = crop.shape[:2]
        shape = self._predictor(crop, dlib.rectangle(0, 0, width - 1, height - 1))
        return dlib.get_face_chip(crop, shape, size=CHIP_SIZE, padding=CHIP_PADDING)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """``[N,H,W(,C)]`` uint8 face crops -> ``[N,128]`` float32 descriptors (unit-ish length)."""
        frames = as_rgb(batch)
        if not len(frames):
            return np.zeros((0, DIM), np.float32)
        chips = [self.chip(np.ascontiguousarray(frame)) for frame in frames]
        return np.asarray(self._net.compute_face_descriptor(chips, self.num_jitters), dtype=np.float32)
