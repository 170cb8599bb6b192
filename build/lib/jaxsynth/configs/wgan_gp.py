"""WGAN-GP (Poonam et al.): Wasserstein loss + gradient penalty λ=10, n_critic 5, RMSprop 5e-5.

The critic has no BatchNorm (the penalty is per-sample); LayerNorm instead. `batch_size` is the
number of real images per engine step: the critic sees batch_size / n_critic per update.
`:paper` uses RMSprop 5e-5 as the paper's table; the default uses Adam(1e-4, β=(0.5, 0.9)), the
WGAN-GP authors' setting, which converges much faster. `:study32` as the study trains it
(32 px, narrow nets, 300 steps of 40 = 5 critic updates of 8).
"""

from jaxsynth.configs import _gan

from jaxsynth.config import Variants

VARIANTS = Variants(("smoke", "paper", "study32"))


def get_config(arg=None):
    variant, _ = VARIANTS.parse(arg)
    c = _gan.base()
    c.task = "wgan_gp"
    c.model.loss = "wgan_gp"
    c.model.d_norm = "layer"
    c.model.d_dropout = 0.0
    c.gan.real_label = 1.0
    c.gan.n_critic = 5
    c.gan.gp_weight = 10.0
    c.batch_size = 320  # 5 critic updates of 64
    c.optim.g_lr = 1e-4
    c.optim.d_lr = 1e-4
    c.optim.b1 = 0.5
    c.optim.b2 = 0.9
    c.num_steps = 5000
    if variant == "smoke":
        _gan.smoke(c)
        c.gan.n_critic = 2
        c.batch_size = 8
    elif variant == "paper":
        c.image_size = 128
        c.optim.name = "rmsprop"
        c.optim.g_lr = 5e-5
        c.optim.d_lr = 5e-5
        c.batch_size = 320
        c.num_steps = 20000
    elif variant == "study32":
        _gan.study32(c)
        c.num_steps = 300
        c.batch_size = 40
    return c
