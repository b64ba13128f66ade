"""Notebook 6's visible tests catch the common mistakes of its two exercises, with feedback.

Uses the course's harness in test_notebooks.py (run the student version in this process and swap
in each wrong implementation before its test cell); notebook 6's mistakes are listed here.
"""

from __future__ import annotations

import pytest
import test_notebooks

NAME = "06_beyond_feature_maps"


def _saliency(body: str, result: str) -> str:
    return (
        "def saliency(model, image, class_index=None):\n"
        "    batch = tf.convert_to_tensor(image[np.newaxis])\n"
        "    with tf.GradientTape() as tape:\n" + body
        + f"    g = tape.gradient(s, batch)\n    return {result}"
    )


WATCH = "        tape.watch(batch)\n"
LOGITS = (
    "        p = course.score_model(model)(batch, training=False)['scores']\n"
    "        c = int(np.argmax(p[0])) if class_index is None else class_index\n"
    "        s = p[0, c]\n"
)
PROBABILITIES = LOGITS.replace("course.score_model(model)(batch, training=False)['scores']", "model(batch, training=False)")
RIGHT = "np.abs(g.numpy()[0]).max(axis=-1)"


def _grad_cam(relu="np.maximum(cam, 0)", resize=True, weights="grads.mean(axis=(0, 1))",
              scale="cam / peak if peak > 0 else np.zeros_like(cam)") -> str:
    source = (
        "def grad_cam_heatmap(model, image, layer_name='conv2', class_index=None):\n"
        "    scorer = course.score_model(model, layer_name)\n"
        "    batch = tf.convert_to_tensor(image[np.newaxis])\n"
        "    with tf.GradientTape() as tape:\n        tape.watch(batch)\n"
        "        out = scorer(batch, training=False)\n        maps, logits = out['maps'], out['scores']\n"
        "        c = int(np.argmax(logits[0])) if class_index is None else class_index\n"
        "        score = logits[0, c]\n"
        "    grads = tape.gradient(score, maps)[0].numpy()\n"
        f"    weights = {weights}\n    cam = (maps[0].numpy() * weights).sum(axis=-1)\n    cam = {relu}\n"
    )
    if resize:
        source += "    cam = tf.image.resize(cam[np.newaxis, :, :, np.newaxis], (28, 28))[0, :, :, 0].numpy()\n"
    return source + f"    peak = cam.max()\n    return {scale}"


MISTAKES = {
    "saliency_tests": [
        (_saliency(WATCH + PROBABILITIES, RIGHT), "gradient of the softmax probability"),
        (_saliency(LOGITS, RIGHT), "tape.watch(batch)"),
        (_saliency(WATCH + LOGITS, "np.abs(g.numpy())"), "drop the batch axis"),
        (_saliency(WATCH + LOGITS, "g.numpy()[0].max(axis=-1)"), "take np.abs"),
        (_saliency(WATCH + LOGITS.replace(" if class_index is None else class_index", ""), RIGHT), "use class_index"),
        (_saliency(WATCH + LOGITS.replace("int(np.argmax(p[0]))", "0"), RIGHT), "the predicted class"),
        (_saliency(WATCH + LOGITS, "tf.reduce_max(tf.abs(g[0]), axis=-1)"), "convert the tensor with np.asarray"),
        # the forward pass before the tape: nothing is recorded, the gradient is None
        (_saliency(WATCH + LOGITS, RIGHT).replace(
            "    with tf.GradientTape() as tape:\n        tape.watch(batch)\n"
            "        p = course.score_model(model)(batch, training=False)['scores']\n",
            "    p = course.score_model(model)(batch, training=False)['scores']\n"
            "    with tf.GradientTape() as tape:\n        tape.watch(batch)\n"),
         "inside the `with tf.GradientTape() as tape:` block"),
    ],
    "grad_cam_heatmap_tests": [
        (_grad_cam(resize=False), "resize to the image's 28x28"),
        (_grad_cam(relu="cam"), "apply ReLU"),
        (_grad_cam(scale="cam"), "divide the heatmap by its maximum"),
        (_grad_cam(scale="cam / peak"), "when the maximum is 0"),
        (_grad_cam(weights="grads"), "mean of the gradient over height and width"),
        (_grad_cam(scale="cam / cam.sum() if cam.sum() > 0 else np.zeros_like(cam)"), "divide the heatmap by its maximum"),
        # issue 11: the forward pass outside the tape gave "ValueError: Attempt to convert a value (None)"
        (_grad_cam().replace(
            "    with tf.GradientTape() as tape:\n        tape.watch(batch)\n"
            "        out = scorer(batch, training=False)\n",
            "    out = scorer(batch, training=False)\n    with tf.GradientTape() as tape:\n        tape.watch(batch)\n"),
         "call the model (course.score_model(...)) inside the `with tf.GradientTape() as tape:` block"),
        (_grad_cam(scale="tf.constant(cam / peak if peak > 0 else np.zeros_like(cam))"), "convert the tensor with np.asarray"),
    ],
}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")  # a mistake's 0/0
def test_visible_tests_of_notebook_06_catch_the_common_mistakes(monkeypatch):
    for grade_id, mistakes in MISTAKES.items():
        monkeypatch.setitem(test_notebooks.MISTAKES, grade_id, mistakes)
    test_notebooks.test_visible_tests_catch_the_common_mistakes(NAME)
