"""Watch feature maps and filters change while the model trains.

:class:`FeatureMapLogger` is a Keras callback: at the start of training (the random
initialisation, step 0) and after every epoch (step = epoch number, from 1) it

* keeps a snapshot of the chosen layers' feature maps for a few fixed images and of their
  filters, in memory (``logger.snapshots``), for :func:`plot_maps_across_epochs`;
* optionally writes the same pictures with ``tf.summary.image`` to a TensorBoard log
  directory: tags ``feature_maps/<layer>`` (one montage per logged image) and
  ``filters/<layer>`` (one montage of the kernels). ``tensorboard --logdir <dir>`` shows
  them with a step slider.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from course import validate
from course.activations import conv_layer_names, extract_feature_maps
from course.analysis import filter_weights
from course.errors import InputShapeError
from course.inputs import model_feed
from course.normalize import normalize_maps
from course.plotting import (
    montage,
    plot_maps_across_epochs,  # noqa: F401  (its old home; drawn in the plotting layer)
)


def _kernels(weights: np.ndarray) -> np.ndarray:
    """Kernels (kh, kw, in, out) as one (kh, kw, out) map per filter (the mean over inputs)."""
    return weights.mean(axis=2)


def _as_summary_image(grid: np.ndarray) -> np.ndarray:
    """A montage (with NaN gaps) as a (H, W, 1) float image in [0, 1]; gaps are drawn black."""
    return np.nan_to_num(grid, nan=0.0)[..., np.newaxis].astype(np.float32)


class FeatureMapLogger(keras.callbacks.Callback):
    """Snapshot (and log to TensorBoard) chosen layers' feature maps and filters every epoch.

    Args:
        images: A few fixed images (N, H, W, C), or one image (H, W, C), whose maps are kept;
            for a model with several inputs, a dict ``{input name: array}``.
        layers: Layer names; default every conv layer of the model being trained.
        log_dir: A TensorBoard log directory, or None to keep the snapshots only.
        ncols: Maps per row in the logged montages.

    Attributes:
        snapshots: A list with one dict per logged step, in order: ``{"epoch": e, "maps":
            {layer: (N, H, W, C)}, "filters": {layer: (kh, kw, out)}}``. Epoch 0 is the
            initialisation; epoch e >= 1 is after the e-th epoch. Filters are the kernels'
            mean over input channels (only for layers that have a 4-D kernel).
    """

    def __init__(self, images, layers=None, log_dir: str | os.PathLike | None = None, ncols: int = 8):
        super().__init__()
        self._inputs = None  # a model with several inputs: checked against it at the first snapshot
        if isinstance(images, dict):
            self._inputs, self.images = images, None
        else:
            batch = validate.array(images, "images").astype(np.float32)
            if batch.ndim not in (3, 4):
                raise InputShapeError(
                    f"images of shape {batch.shape}: expected one image (H, W, C) or a few (N, H, W, C)."
                )
            self.images = batch[np.newaxis] if batch.ndim == 3 else batch
        validate.integer(ncols, "ncols", 1)
        self.layers = [layers] if isinstance(layers, str) else layers
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.ncols = ncols
        self.snapshots: list[dict] = []
        self._writer = None
        self._epochs_done = 0

    def _layer_names(self) -> list[str]:
        if self.layers is None:
            self.layers = conv_layer_names(self.model)
        return list(self.layers)

    def _snapshot(self, epoch: int) -> None:
        names = self._layer_names()
        if self._inputs is not None:
            self._inputs = model_feed(self.model, self._inputs)
            self.images = self._inputs.images
        maps = extract_feature_maps(self.model, self.images if self._inputs is None else self._inputs, names)
        filters = {}
        for name in names:
            try:
                kernels = filter_weights(self.model, name)
            except ValueError:  # a layer without a kernel (pooling): maps only
                continue
            if kernels.ndim == 4:
                filters[name] = _kernels(kernels)
        snapshot = {"epoch": epoch, "maps": maps, "filters": filters}
        self.snapshots.append(snapshot)
        if self.log_dir is not None:
            self._write(snapshot)

    def _write(self, snapshot: dict) -> None:
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        step = snapshot["epoch"]
        with self._writer.as_default(step=step):
            for name, maps in snapshot["maps"].items():
                scaled = normalize_maps(maps, "per_map")
                pictures = np.stack([_as_summary_image(montage(one, self.ncols)) for one in scaled])
                tf.summary.image(
                    f"feature_maps/{name}", pictures, max_outputs=len(pictures),
                    description=f"'{name}' maps of {len(pictures)} fixed images, each map scaled on its own",
                )
            for name, kernels in snapshot["filters"].items():
                limit = float(np.abs(kernels).max()) or 1.0
                centred = 0.5 + 0.5 * kernels / limit  # 0.5 (grey) is a zero weight
                tf.summary.image(
                    f"filters/{name}", _as_summary_image(montage(centred, self.ncols))[np.newaxis],
                    description=f"'{name}' kernels (mean over input channels); grey is 0, white positive",
                )
        self._writer.flush()

    def on_train_begin(self, logs=None):
        if not self.snapshots:  # a second fit() continues the same record
            self._snapshot(0)
        self._epochs_done = self.snapshots[-1]["epoch"]

    def on_epoch_end(self, epoch, logs=None):
        self._epochs_done += 1
        self._snapshot(self._epochs_done)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
