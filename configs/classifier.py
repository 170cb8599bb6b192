"""A tumour-vs-normal classifier trained by the one engine (`jaxsynth train --config classifier`).

The study's classifier arms (Rane 2026's CNN, or ResNet / MobileNetV2) as a standalone run on a
data source's training split: class-weighted BCE, Adam, checkpoints and exact resume like every
model. `classifier.class_weight` is the per-class loss weight (normal, tumour); the default is
Rane 2026's "balanced" weighting for the default split (n / (2 n_c) with 1,000 normal and 100
tumour training tiles). Every epoch the real validation split is evaluated and the weights with
the lowest validation loss are kept in `<workdir>/best` (Rane 2026's early stopping, the
engine's `Validation` hook). Variants: `:smoke` (16 px, seconds), `:resnet18` (ResNet-18 with the
small-input stem).
"""

import ml_collections

from jaxsynth.config import Variants, base_config
from jaxsynth.train.defaults import engine_config

VARIANTS = Variants(("smoke", "resnet18"))


def get_config(arg=None):
    variant, _ = VARIANTS.parse(arg)
    c = base_config()
    c.task = "jaxsynth.tasks.classify:make_task"
    c.image_size = 32
    c.batch_size = 32
    c.num_steps = 400  # ~12 epochs over 1,100 training tiles at batch 32
    c.checkpoint_every = 200
    c.data.classes = ("normal", "tumour")
    c.data.train_classes = ("normal", "tumour")
    c.data.split = ml_collections.ConfigDict()
    c.data.split.test = {"normal": 100, "tumour": 10}
    c.data.split.val = {"normal": 100, "tumour": 10}
    c.data.split.train = {"normal": 1000, "tumour": 100}
    c.data.augment = "none"
    c.classifier = ml_collections.ConfigDict()
    c.classifier.model = "paper_cnn"  # paper_cnn | resnet18 | resnet50 | mobilenet_v2
    c.classifier.lr = 1e-3
    c.classifier.class_weight = (0.55, 5.5)  # balanced for 1,000 normal / 100 tumour
    c.classifier.hidden = 128  # paper_cnn only
    c.classifier.dropout = 0.5  # paper_cnn only
    c.train = engine_config()
    c.train.log_every = 50
    c.train.eval_every = 35  # one epoch: validation loss/accuracy, best weights in <workdir>/best
    if variant == "smoke":
        c.image_size = 16
        c.batch_size = 8
        c.num_steps = 6
        c.checkpoint_every = 3
        c.data.split.test = {"normal": 4, "tumour": 4}
        c.data.split.val = {"normal": 4, "tumour": 4}
        c.data.split.train = {"normal": 16, "tumour": 16}
        c.classifier.class_weight = (1.0, 1.0)
        c.train.log_every = 2
        c.train.eval_every = 2
    elif variant == "resnet18":
        c.classifier.model = "resnet18"
    return c
