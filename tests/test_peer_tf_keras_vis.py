"""A peer oracle: tf-keras-vis (Kubota, https://github.com/keisen/tf-keras-vis), an independent
implementation of the same published formulas, on the course's trained model and a functional
model. The matched conventions are documented in docs/interpretability.md:

* both explain the logit: tf-keras-vis is given a functional twin of the model whose last layer
  is linear (its ``ReplaceToLinear`` modifier reads ``model.output_names``, which Keras 3
  ``Sequential`` models do not have), with the same weights;
* saliency: ``normalize_map=False`` (ours is not normalized): the two must agree to float32 rounding;
* Grad-CAM: tf-keras-vis's CAM at the layer's resolution (``expand_cam=False``,
  ``normalize_cam=False``), then the course's convention (bilinear ``tf.image.resize`` with
  half-pixel centres, divided by the maximum) must give the course's heatmap. With its own
  convention (``scipy.ndimage.zoom(order=1)`` and min-max scaling) the maps still correlate.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from conftest import tiny_functional
from tf_keras_vis.gradcam import Gradcam  # a test-only dependency, pinned in requirements.txt
from tf_keras_vis.saliency import Saliency
from tf_keras_vis.utils.scores import CategoricalScore

import course


def logit_twin(model: keras.Model) -> keras.Model:
    """A functional copy of ``model`` (fresh layers, same weights) whose last layer is linear."""
    def clone(layer):
        config = layer.get_config()
        if layer is model.layers[-1] and "activation" in config:
            config["activation"] = "linear"
        return layer.__class__.from_config(config)

    if isinstance(model, keras.Sequential):  # as a functional graph: tf-keras-vis builds sub-models of it
        inputs = x = keras.Input(model.inputs[0].shape[1:])
        for layer in model.layers:
            x = clone(layer)(x)
        twin = keras.Model(inputs, x)
    else:
        twin = keras.models.clone_model(model, clone_function=clone)
    twin.set_weights(model.get_weights())
    return twin


def _cases(trained_model, mnist):
    (_, _), (x_test, y_test) = mnist
    functional = tiny_functional()
    rng = np.random.default_rng(4)
    return [
        ("course model", trained_model, "conv2", [(x_test[i], int(y_test[i])) for i in range(4)]),
        ("course model conv1", trained_model, "conv1", [(x_test[i], int(y_test[i])) for i in range(4, 6)]),
        ("functional", functional, "fb", [(rng.random((12, 12, 1), dtype=np.float32), c) for c in range(3)]),
    ]


def test_saliency_equals_tf_keras_vis(trained_model, mnist):
    for name, model, _, examples in _cases(trained_model, mnist):
        peer = Saliency(logit_twin(model), clone=False)
        for image, label in examples:
            theirs = peer(CategoricalScore([label]), image[None], normalize_map=False)[0]
            ours = course.saliency_map(model, image, class_index=label)
            assert ours.max() > 0
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6 * ours.max(), err_msg=name)


def test_grad_cam_equals_tf_keras_vis_under_matched_conventions(trained_model, mnist):
    correlations = []
    for name, model, layer, examples in _cases(trained_model, mnist):
        peer = Gradcam(logit_twin(model), clone=False)
        for image, label in examples:
            raw = peer(CategoricalScore([label]), image[None], penultimate_layer=layer,
                       expand_cam=False, normalize_cam=False)[0]
            resized = tf.image.resize(raw[None, :, :, None], image.shape[:2], method="bilinear")[0, :, :, 0].numpy()
            expected = resized / resized.max() if resized.max() > 0 else resized
            ours = course.grad_cam(model, image, layer, class_index=label)
            np.testing.assert_allclose(ours, expected, atol=1e-5, err_msg=f"{name}, class {label}")
            # tf-keras-vis's own convention (zoom, min-max): a different resize, the same map.
            own = peer(CategoricalScore([label]), image[None], penultimate_layer=layer)[0]
            if ours.max() > 0 and own.std() > 0:
                correlations.append(np.corrcoef(own.ravel(), ours.ravel())[0, 1])
    assert len(correlations) >= 6 and min(correlations) > 0.9, np.round(correlations, 3)
