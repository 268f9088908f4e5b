"""Write a frame into the interpreter's input tensor: resize (letterbox or stretch) and quantise.

Quantisation goes through a 256-entry lookup table (pixel → input dtype). For 8-bit inputs whose image
rows are contiguous in the tensor (letterbox top/bottom bars, stretch), OpenCV resizes straight into the
interpreter's own buffer and ``cv2.LUT`` quantises it in place; otherwise ``np.take`` writes through the
table into the buffer. No float frame is ever materialised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from agent.vision.interpreter import ModelRuntime, TensorInfo

Normalization = Literal["raw", "unit", "symmetric"]  # pixel, pixel/255, pixel/127.5 - 1
PAD_VALUE = 114  # Ultralytics' letterbox grey


def default_normalization(info: TensorInfo, kind: str) -> Normalization:
    """TFLite conventions: uint8 models take raw pixels; int8 models were quantised from pixel/255;
    float SSD models want [-1, 1] and float YOLO models [0, 1]."""
    if info.dtype == np.uint8:
        return "raw"
    if info.dtype == np.int8:
        return "unit"
    return "symmetric" if kind == "ssd" else "unit"


def build_lut(info: TensorInfo, norm: Normalization) -> np.ndarray | None:
    """pixel (0..255) → value in the input tensor's dtype; None when the pixel can be copied as is."""
    pixels = np.arange(256, dtype=np.float64)
    real = {"raw": pixels, "unit": pixels / 255.0, "symmetric": pixels / 127.5 - 1.0}[norm]
    if info.dtype == np.uint8 and norm == "raw" and not info.quantised:
        return None
    if info.quantised:
        if norm == "raw" and info.dtype == np.uint8:
            return None  # uint8 models take pixels as they are; their quantisation encodes normalisation
        q = np.round(real / info.scale + info.zero_point)
        lim = np.iinfo(info.dtype)
        return np.clip(q, lim.min, lim.max).astype(info.dtype)
    return real.astype(info.dtype)


@dataclass(slots=True)
class Geometry:
    """How input-normalised coordinates map back to the full frame."""

    sx: float  # share of the input width covered by the image
    sy: float
    ox: float  # left/top offset of the image in the input, normalised
    oy: float

    def to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """``[..., 4]`` x1,y1,x2,y2 in input-normalised units → frame-normalised, clipped to 0..1."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[..., 0::2] = (boxes[..., 0::2] - self.ox) / self.sx
        out[..., 1::2] = (boxes[..., 1::2] - self.oy) / self.sy
        return np.clip(out, 0.0, 1.0, out=out)


class InputWriter:
    """Fills the image input tensor in place for each frame."""

    def __init__(self, runtime: ModelRuntime, info: TensorInfo, resize: Literal["letterbox", "stretch"],
                 norm: Normalization) -> None:
        self.runtime = runtime
        self.info = info
        self.resize = resize
        self.width, self.height = info.shape[2], info.shape[1]
        self.lut = build_lut(info, norm)
        #: the table as raw bytes for cv2.LUT when the tensor is 8-bit (int8 is the same bytes, reinterpreted)
        self._lut_u8: np.ndarray | None = None
        if info.dtype in (np.dtype(np.int8), np.dtype(np.uint8)):
            self._lut_u8 = (self.lut if self.lut is not None else np.arange(256, dtype=np.uint8)).view(np.uint8)
        self._tensor = runtime.input_view(info)
        self._resized: np.ndarray | None = None
        self._geom_for: tuple[int, int] | None = None
        self.geometry = Geometry(1.0, 1.0, 0.0, 0.0)
        self._placement = (0, 0, self.width, self.height)
        self._pad = self.lut[PAD_VALUE] if self.lut is not None else PAD_VALUE

    def placement(self, w: int, h: int) -> tuple[int, int, int, int]:
        """Where a ``w`` x ``h`` image lands in the input: left, top, width, height (pure; any thread)."""
        if self.resize == "stretch":
            return 0, 0, self.width, self.height
        scale = min(self.width / w, self.height / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        return (self.width - nw) // 2, (self.height - nh) // 2, nw, nh

    def downsized(self, image: np.ndarray) -> np.ndarray | None:
        """The image resized to its place in the input, or None when it is that size already.

        Thread-safe, touches no tensor: the capture thread calls it so the inference thread only quantises.
        """
        h, w = image.shape[:2]
        _, _, nw, nh = self.placement(w, h)
        if (w, h) == (nw, nh):
            return None
        return self._resize_into(image, None, nw, nh)

    def _plan(self, w: int, h: int) -> None:
        px, py, nw, nh = self.placement(w, h)
        self._placement = (px, py, nw, nh)
        self._resized = np.empty((nh, nw, 3), np.uint8)
        self.geometry = Geometry(nw / self.width, nh / self.height, px / self.width, py / self.height)
        self._geom_for = (w, h)

    def write(self, image: np.ndarray) -> Geometry:
        h, w = image.shape[:2]
        if self._geom_for != (w, h):
            self._plan(w, h)
        px, py, nw, nh = self._placement
        view = self._tensor()[0]
        region = view[py:py + nh, px:px + nw]
        if region.flags.c_contiguous and self._lut_u8 is not None:
            # fast path (full-width letterbox or stretch, 8-bit input): OpenCV resizes straight into the
            # tensor's bytes, then quantises them in place through the table (SIMD, no temporary frame)
            target = region.view(np.uint8)
            if self.lut is not None and (w, h) == (nw, nh):
                cv2.LUT(np.ascontiguousarray(image), self._lut_u8, dst=target)
            else:
                self._resize_into(image, target, nw, nh)
                if self.lut is not None:
                    cv2.LUT(target, self._lut_u8, dst=target)
        else:
            resized = self._resize_into(image, self._resized, nw, nh)
            if self.lut is None:
                region[...] = resized
            else:
                np.take(self.lut, resized, out=region, mode="clip")
        if (nw, nh) != (self.width, self.height):
            view[:py] = self._pad
            view[py + nh:] = self._pad
            view[:, :px] = self._pad
            view[:, px + nw:] = self._pad
        del view, region
        return self.geometry

    @staticmethod
    def _resize_into(image: np.ndarray, dst: np.ndarray | None, nw: int, nh: int) -> np.ndarray:
        h, w = image.shape[:2]
        if (w, h) == (nw, nh):
            if dst is None:
                return image
            dst[...] = image
            return dst
        interp = cv2.INTER_AREA if w > 2 * nw else cv2.INTER_LINEAR
        return cv2.resize(image, (nw, nh), dst=dst, interpolation=interp)
