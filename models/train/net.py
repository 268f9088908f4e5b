"""The demo detector: a small depthwise-separable conv net on a stride-8 grid with a stride-16 context branch.

The trainable model outputs raw per-cell values ``[B, gh, gw, 4 + C]`` (box offsets tx, ty, size logits
tw, th, class logits). ``decode`` turns them, in-graph, into the YOLOv8 raw-head layout the agent reads:
``[1, 4 + C, gh * gw]`` with cx, cy, w, h normalised to the input and sigmoid class scores, all in 0..1 so
one int8 output scale (~1/255) serves boxes and scores alike.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

#: centre offsets reach this many cells either side of the cell centre
OFFSET_RANGE = 3.5


def _sep(x, filters: int, stride: int = 1, name: str = ""):
    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(name=f"{name}_dwbn")(x)
    x = layers.ReLU(name=f"{name}_dwrelu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    x = layers.BatchNormalization(name=f"{name}_pwbn")(x)
    return layers.ReLU(name=f"{name}_pwrelu")(x)


def build_model(in_h: int, in_w: int, num_classes: int, width: float = 1.0) -> keras.Model:
    c = lambda n: max(8, int(n * width))  # noqa: E731
    inp = keras.Input((in_h, in_w, 3), name="image")
    x = layers.Conv2D(c(16), 3, strides=2, padding="same", use_bias=False, name="stem")(inp)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = _sep(x, c(32), 2, "s4a")
    x = _sep(x, c(32), 1, "s4b")
    x = _sep(x, c(64), 2, "s8a")
    p8 = _sep(x, c(64), 1, "s8b")
    x = _sep(p8, c(96), 2, "s16a")
    x = _sep(x, c(96), 1, "s16b")
    x = _sep(x, c(96), 1, "s16c")
    x = _sep(x, c(128), 2, "s32a")
    x = _sep(x, c(128), 1, "s32b")
    x = layers.UpSampling2D(2, name="up32")(x)
    x = _sep(x, c(96), 1, "m16")
    x = layers.UpSampling2D(2, name="up16")(x)
    x = layers.Concatenate(name="fuse")([x, p8])
    x = layers.Conv2D(c(64), 1, use_bias=False, name="fuse_pw")(x)
    x = layers.BatchNormalization(name="fuse_bn")(x)
    x = layers.ReLU(name="fuse_relu")(x)
    x = _sep(x, c(64), 1, "h1")
    x = _sep(x, c(64), 1, "h2")
    box = layers.Conv2D(4, 1, name="box")(x)
    prior = -np.log((1 - 0.01) / 0.01)  # start every class score near 0.01 (focal-loss practice)
    cls = layers.Conv2D(num_classes, 1, bias_initializer=keras.initializers.Constant(prior), name="cls")(x)
    out = layers.Concatenate(name="raw")([box, cls])
    return keras.Model(inp, out, name="edgecam_demo")


def grid(gh: int, gw: int) -> tuple[tf.Tensor, tf.Tensor]:
    ys, xs = np.mgrid[0:gh, 0:gw].astype(np.float32)
    return tf.constant(xs[None, :, :, None]), tf.constant(ys[None, :, :, None])


def decode_boxes(raw: tf.Tensor, gh: int, gw: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """cx, cy, w, h (each ``[B, gh, gw, 1]``, input-normalised) from the raw box channels."""
    gx, gy = grid(gh, gw)
    span = 2 * OFFSET_RANGE
    cx = (gx + 0.5 + span * (tf.sigmoid(raw[..., 0:1]) - 0.5)) / gw
    cy = (gy + 0.5 + span * (tf.sigmoid(raw[..., 1:2]) - 0.5)) / gh
    return cx, cy, tf.sigmoid(raw[..., 2:3]), tf.sigmoid(raw[..., 3:4])


def decode(raw: tf.Tensor, gh: int, gw: int) -> tf.Tensor:
    """Raw ``[1, gh, gw, 4 + C]`` → YOLO head ``[1, 4 + C, gh * gw]``, every value clipped to 0..1."""
    cx, cy, w, h = decode_boxes(raw, gh, gw)
    scores = tf.sigmoid(raw[..., 4:])
    head = tf.concat([tf.clip_by_value(cx, 0.0, 1.0), tf.clip_by_value(cy, 0.0, 1.0), w, h, scores], axis=-1)
    channels = head.shape[-1]
    return tf.transpose(tf.reshape(head, [1, gh * gw, channels]), [0, 2, 1])


def losses(raw: tf.Tensor, target: tf.Tensor, num_classes: int) -> tuple[tf.Tensor, tf.Tensor]:
    """CenterNet focal loss on the class heatmaps + L1 on centre (relative to size) and log size, per cell."""
    gh, gw = raw.shape[1], raw.shape[2]
    heat, box, wt = target[..., :num_classes], target[..., num_classes:num_classes + 4], target[..., -1:]
    logits = raw[..., 4:]
    p = tf.clip_by_value(tf.sigmoid(logits), 1e-4, 1 - 1e-4)
    pos = tf.cast(heat > 0.999, tf.float32)
    pos_loss = -tf.math.log(p) * tf.square(1 - p) * pos
    neg_loss = -tf.math.log(1 - p) * tf.square(p) * tf.pow(1 - heat, 4) * (1 - pos)
    n_pos = tf.maximum(tf.reduce_sum(pos), 1.0)
    cls_loss = (tf.reduce_sum(pos_loss) + tf.reduce_sum(neg_loss)) / n_pos

    cx, cy, _, _ = decode_boxes(raw, gh, gw)
    log_w = -tf.nn.softplus(-raw[..., 2:3])  # log(sigmoid(tw)), stable
    log_h = -tf.nn.softplus(-raw[..., 3:4])
    eps = 1e-4
    # centre errors relative to the object's own size, like IoU: a 2 px slip matters on a distant pedestrian
    bw, bh = tf.maximum(box[..., 2:3], 1e-3), tf.maximum(box[..., 3:4], 1e-3)
    l1 = (tf.abs(cx - box[..., 0:1]) / bw + tf.abs(cy - box[..., 1:2]) / bh
          + tf.abs(log_w - tf.math.log(box[..., 2:3] + eps)) + tf.abs(log_h - tf.math.log(box[..., 3:4] + eps)))
    box_loss = tf.reduce_sum(l1 * wt) / tf.maximum(tf.reduce_sum(wt), 1.0)
    return cls_loss, box_loss
