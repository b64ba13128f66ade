"""Beyond feature maps: why did the network decide? Saliency, Grad-CAM, activation maximization.

Each method has its own module, all built on the shared re-tracing core :mod:`course.tracing`
(one forward pass that gives any layer's maps and the class score together):

* :mod:`course.saliency`: :func:`saliency_map` (vanilla and SmoothGrad);
* :mod:`course.gradcam`: :func:`grad_cam` and :func:`last_conv_layer`;
* :mod:`course.maximize`: :func:`maximize_activation`;
* :mod:`course.tracing`: :func:`score_model` (logits and maps of one pass);
* :mod:`course.photos`: MobileNetV2 and a sample photo.

Their figures are drawn in :mod:`course.plotting`. This module keeps the old import path
(``from course.explain import grad_cam``) working.
"""

from course.gradcam import grad_cam, last_conv_layer
from course.maximize import maximize_activation
from course.photos import load_mobilenet_v2, mobilenet_input, sample_photo
from course.saliency import saliency_map
from course.tracing import score_model

__all__ = ["grad_cam", "last_conv_layer", "load_mobilenet_v2", "maximize_activation", "mobilenet_input",
           "sample_photo", "saliency_map", "score_model"]
