"""StyleGAN2-ADA as an engine Task: non-saturating logistic loss, style mixing, lazy R1 and
path-length regularisation, EMA of G with ramp-up, ADA with its `p` controller.

WHY everything lives in the state: the reference implementation's most reported failure is its
resume (stylegan2-ada-pytorch #81): restarting resets ADA's `p` and the progress counters. Here
`p`, the ADA sign accumulator, the path-length running mean and the last regulariser values are
arrays in `StyleGanState.aux`, and every schedule (lazy R1 every `r1_interval` steps, path length
every `pl_interval`, the ADA adjustment every `ada.interval`, the EMA ramp) is a function of
`state.step` evaluated inside the jitted step. So the engine's checkpoint holds all of it and a
resumed run is bitwise the uninterrupted one.

One engine step = one G update (main loss + on PL steps the path-length penalty × interval) and
one D update (main loss + on R1 steps γ/2·‖∇D(real)‖² × interval). The official code takes the
regulariser as a separate optimiser step; summing into one step keeps one Adam update per network
per step. Adam's lr and betas are scaled by interval/(interval + 1) as in the official lazy
regularisation. When the engine dispatches one step at a time (CPU's default) it compiles one
program per regulariser phase (`step_phase`), so the off steps do not even contain the
second-order gradients. Inside a K-step scan (GPU/TPU) the branches run under `lax.cond`; on CPU
there they are computed every step and selected (`lazy_branch`: XLA:CPU's conditionals slow
convolutions down far more than that costs).
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from jaxsynth.errors import UserError
from jaxsynth.models import ada
from jaxsynth.models.stylegan2 import Discriminator, Generator, num_ws
from jaxsynth.train.state import ModelState, TrainState

AUX_KEYS = ("ada_p", "ada_sign_sum", "ada_count", "pl_mean", "r1_last", "pl_last")


@struct.dataclass
class StyleGanState(TrainState):
    """TrainState + `aux`: float32 scalars that must survive a resume (see AUX_KEYS)."""

    aux: dict = struct.field(default_factory=dict)


def reg_fires(step: jax.Array, interval: int) -> jax.Array:
    """Whether the lazy regulariser with this interval runs at `step` (0, interval, 2·interval…);
    interval 0 = never."""
    if interval <= 0:
        return jnp.asarray(False)
    return step % interval == 0


def lazy_branch(fires: jax.Array, on, off):
    """`lax.cond(fires, on, off, None)` where it pays, and a select of both where it does not.

    XLA:CPU runs convolutions inside a conditional's branch ~25x slower than the same
    convolutions outside one (the R1 penalty of the `:study32` D at batch 8: 0.40 s computed
    directly, 9.3 s inside `lax.cond`; jax issue 12868 reports the same for loop bodies, the
    reason the engine unrolls its scans on CPU). There, computing the regulariser on every step
    and selecting its result is far cheaper than the conditional; the values are the same. GPU
    and TPU keep the conditional, so the off steps cost nothing."""
    if jax.default_backend() != "cpu":
        return jax.lax.cond(fires, on, off, None)
    return jax.tree.map(lambda a, b: jnp.where(fires, a, b), on(None), off(None))


def branch(fires: jax.Array, static: bool | None, on, off):
    """The regulariser's branch: fixed at trace time when the engine dispatches a static phase
    (`StyleGan2Task.step_phase`: only the branch that runs is compiled), else `lazy_branch`."""
    if static is None:
        return lazy_branch(fires, on, off)
    return on(None) if static else off(None)


def ema_beta(step: jax.Array, batch: int, ema_kimg: float, rampup: float) -> jax.Array:
    """β of G's EMA after `step` steps: 0.5^(batch / ema_nimg), ema_nimg ramped up as
    min(ema_kimg·1000, images_seen·rampup) (rampup 0 = no ramp)."""
    ema_nimg = jnp.asarray(ema_kimg * 1000.0, jnp.float32)
    if rampup > 0:
        ema_nimg = jnp.minimum(ema_nimg, step.astype(jnp.float32) * batch * rampup)
    return 0.5 ** (batch / jnp.maximum(ema_nimg, 1e-8))


def _adam(lr: float, b1: float, b2: float, eps: float, interval: int):
    c = interval / (interval + 1) if interval > 0 else 1.0
    return optax.adam(lr * c, b1=b1**c, b2=b2**c, eps=eps)


class StyleGan2Task:
    """Models "generator" (EMA = the sampling G) and "discriminator"; see module docstring."""

    ema_name = "generator"

    def __init__(self, config: ml_collections.ConfigDict):
        m, s, a = config.model, config.stylegan, config.ada
        self.config = config
        self.name = "stylegan2"
        self.num_classes = int(m.num_classes)
        self.conditional = self.num_classes > 0
        self.z_dim = int(m.z_dim)
        self.batch = int(config.batch_size)
        try:
            self.num_ws = num_ws(int(config.image_size))
            self.groups = ada.parse_groups(str(a.augment))
        except ValueError as e:  # a bad config value: one line naming the field
            raise UserError(f"config: {e}") from None
        self.generator = Generator(
            image_size=int(config.image_size),
            z_dim=self.z_dim,
            w_dim=int(m.w_dim),
            num_classes=self.num_classes,
            mapping_layers=int(m.mapping_layers),
            mapping_lr_mul=float(m.mapping_lr_mul),
            channel_base=int(m.g_channel_base),
            channel_max=int(m.g_channel_max),
        )
        self.discriminator = Discriminator(
            image_size=int(config.image_size),
            num_classes=self.num_classes,
            channel_base=int(m.d_channel_base),
            channel_max=int(m.d_channel_max),
            mbstd_group=int(m.mbstd_group),
            mbstd_channels=int(m.mbstd_channels),
            mapping_layers=int(m.mapping_layers),
            cmap_dim=int(m.cmap_dim),
        )
        self.s = s
        self.ada = a
        self.truncation_psi = float(s.truncation_psi)
        group = min(int(m.mbstd_group), self.batch)
        if self.batch % group:
            raise UserError(
                f"batch_size={self.batch} is not divisible by model.mbstd_group={group} "
                "(minibatch-stddev groups)"
            )

    def step_phase(self, step: int) -> tuple[bool, bool]:
        """(path length fires, R1 fires) at `step`: the engine compiles one single-step program
        per phase, so on CPU the 3 of 4 steps without a regulariser skip it (docs/stylegan2.md)."""
        s = self.s
        pl = s.pl_weight > 0 and s.pl_interval > 0 and step % int(s.pl_interval) == 0
        r1 = s.r1_gamma > 0 and s.r1_interval > 0 and step % int(s.r1_interval) == 0
        return bool(pl), bool(r1)

    # -- helpers ---------------------------------------------------------------------------
    def with_truncation(self, psi: float) -> StyleGan2Task:
        """A copy that samples with truncation ψ (w = w̄ + ψ(w - w̄); 1 = off)."""
        out = copy.copy(self)
        out.truncation_psi = float(psi)
        return out

    def _labels(self, key, n):
        return jax.random.randint(key, (n,), 0, self.num_classes) if self.conditional else None

    def _ws(self, params, key, n, labels):
        """Mapped w (B, num_ws, w_dim), with style mixing at probability `style_mixing`."""
        k1, k2, kc, kp = jax.random.split(key, 4)
        g = self.generator
        w1 = g.apply(
            {"params": params}, jax.random.normal(k1, (n, self.z_dim)), labels, method=g.map
        )
        ws = jnp.repeat(w1[:, None], self.num_ws, axis=1)
        if self.s.style_mixing > 0:
            w2 = g.apply(
                {"params": params}, jax.random.normal(k2, (n, self.z_dim)), labels, method=g.map
            )
            cutoff = jax.random.randint(kc, (), 1, self.num_ws)
            cutoff = jnp.where(jax.random.uniform(kp) < self.s.style_mixing, cutoff, self.num_ws)
            ws = jnp.where((jnp.arange(self.num_ws) < cutoff)[None, :, None], ws, w2[:, None])
        return ws

    def _synth(self, params, ws, key):
        g = self.generator
        return g.apply({"params": params}, ws, method=g.synthesize, rngs={"noise": key})

    def _d(self, params, x, labels, key, p):
        x = self._augment(x, key, p)
        return self.discriminator.apply({"params": params}, x, labels)

    def _augment(self, x, key, p):
        if not self.groups:
            return x
        return lazy_branch(p > 0, lambda _: ada.augment(x, key, p, self.groups), lambda _: x)

    # -- Task interface ----------------------------------------------------------------------
    def init(self, rng: jax.Array, sample_batch: dict) -> StyleGanState:
        kg, kd, kn, kstate = jax.random.split(rng, 4)
        n = min(self.batch, sample_batch["image"].shape[0])
        z = jnp.zeros((n, self.z_dim))
        labels = jnp.zeros((n,), jnp.int32) if self.conditional else None
        gp = self.generator.init({"params": kg, "noise": kn}, z, labels)["params"]
        dp = self.discriminator.init(kd, sample_batch["image"][:n], labels)["params"]
        o, s = self.config.optim, self.s
        g = ModelState.create(
            gp,
            _adam(o.g_lr, o.b1, o.b2, o.eps, int(s.pl_interval) if s.pl_weight > 0 else 0),
            ema_decay=0.0,
        )
        d = ModelState.create(
            dp,
            _adam(o.d_lr, o.b1, o.b2, o.eps, int(s.r1_interval) if s.r1_gamma > 0 else 0),
            ema_decay=0.0,
        )
        aux = {k: jnp.zeros((), jnp.float32) for k in AUX_KEYS}
        aux["ada_p"] = jnp.asarray(float(self.ada.p_init), jnp.float32)
        return StyleGanState(
            step=jnp.zeros((), jnp.int32),
            rng=kstate,
            models={"generator": g, "discriminator": d},
            aux=aux,
        )

    def train_step(self, state: StyleGanState, batch: dict, rng: jax.Array, phase=None):
        """One G and one D update; `phase` = `step_phase(step)` when the engine compiled this
        step for it (the regularisers' branches fixed), None = decided from `state.step`."""
        s, step, aux = self.s, state.step, dict(state.aux)
        static_pl, static_r1 = (None, None) if phase is None else phase
        g, d = state["generator"], state["discriminator"]
        p = aux["ada_p"]
        real = batch["image"]
        real_labels = batch["label"] if self.conditional else None
        b = real.shape[0]
        k = jax.random.split(rng, 12)

        # ---- G: non-saturating loss (+ path-length penalty on PL steps)
        fake_labels = self._labels(k[0], b)

        def g_main(gp):
            x = self._synth(gp, self._ws(gp, k[1], b, fake_labels), k[2])
            return jax.nn.softplus(-self._d(d.params, x, fake_labels, k[3], p)).mean()

        g_loss, g_grads = jax.value_and_grad(g_main)(g.params)
        pl_b = b // int(s.pl_batch_shrink)
        pl_labels = self._labels(k[4], pl_b)

        def g_pl(gp):
            ws = self._ws(gp, k[5], pl_b, pl_labels)
            size = int(self.config.image_size)
            noise = jax.random.normal(k[7], (pl_b, size, size, 3)) / size  # / √(H·W)
            grads = jax.grad(lambda v: jnp.sum(self._synth(gp, v, k[6]) * noise))(ws)
            lengths = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads), axis=2), axis=1))
            pl_mean = aux["pl_mean"] + (jnp.mean(lengths) - aux["pl_mean"]) * s.pl_decay
            pl_mean = jax.lax.stop_gradient(pl_mean)
            penalty = jnp.mean(jnp.square(lengths - pl_mean))
            return penalty * s.pl_weight * s.pl_interval, (pl_mean, penalty)

        def pl_on(_):
            (_, (pl_mean, pen)), grads = jax.value_and_grad(g_pl, has_aux=True)(g.params)
            return grads, pl_mean, pen

        def pl_off(_):
            return jax.tree.map(jnp.zeros_like, g.params), aux["pl_mean"], aux["pl_last"]

        if s.pl_weight > 0 and s.pl_interval > 0:  # else not even traced (compile time)
            do_pl = reg_fires(step, int(s.pl_interval))
            pl_grads, aux["pl_mean"], aux["pl_last"] = branch(do_pl, static_pl, pl_on, pl_off)
            g_grads = jax.tree.map(jnp.add, g_grads, pl_grads)
        updates, g_opt = g.tx.update(g_grads, g.opt_state, g.params)
        g_params = optax.apply_updates(g.params, updates)
        beta = ema_beta(step, b, float(s.ema_kimg), float(s.ema_rampup))
        g_ema = jax.tree.map(lambda e, q: q + (e - q) * beta, g.ema_params, g_params)
        g = g.replace(
            params=g_params, opt_state=g_opt, ema_params=g_ema, ema_updates=g.ema_updates + 1
        )

        # ---- D: logistic loss on augmented real and fake (+ lazy R1 on augmented reals)
        fake_labels_d = self._labels(k[8], b)
        fake = jax.lax.stop_gradient(
            self._synth(g.params, self._ws(g.params, k[9], b, fake_labels_d), k[10])
        )
        kr, kf, k1 = jax.random.split(k[11], 3)

        def d_main(dp):
            lf = self._d(dp, fake, fake_labels_d, kf, p)
            lr_ = self._d(dp, real, real_labels, kr, p)
            loss = jax.nn.softplus(lf).mean() + jax.nn.softplus(-lr_).mean()
            return loss, (lr_, lf)

        (d_loss, (lr_, lf)), d_grads = jax.value_and_grad(d_main, has_aux=True)(d.params)

        def r1_loss(dp):
            gx = jax.grad(lambda x: jnp.sum(self._d(dp, x, real_labels, k1, p)))(real)
            pen = jnp.mean(jnp.sum(jnp.square(gx), axis=(1, 2, 3)))
            return pen * (s.r1_gamma / 2) * s.r1_interval, pen

        def r1_on(_):
            (_, pen), grads = jax.value_and_grad(r1_loss, has_aux=True)(d.params)
            return grads, pen

        def r1_off(_):
            return jax.tree.map(jnp.zeros_like, d.params), aux["r1_last"]

        if s.r1_gamma > 0 and s.r1_interval > 0:
            do_r1 = reg_fires(step, int(s.r1_interval))
            r1_grads, aux["r1_last"] = branch(do_r1, static_r1, r1_on, r1_off)
            d_grads = jax.tree.map(jnp.add, d_grads, r1_grads)
        d = d.apply_gradients(d_grads)

        # ---- ADA: accumulate sign(D(real)); adjust p every `ada.interval` steps
        aux = self._ada_update(aux, lr_, step)
        metrics = {
            "g_loss": g_loss,
            "d_loss": d_loss,
            "d_real_logit": lr_.mean(),
            "d_fake_logit": lf.mean(),
            "r1_penalty": aux["r1_last"],
            "pl_penalty": aux["pl_last"],
            "pl_mean": aux["pl_mean"],
            "ada_p": aux["ada_p"],
            "ema_beta": beta,
            "g_grad_norm": optax.tree.norm(g_grads),
            "d_grad_norm": optax.tree.norm(d_grads),
        }
        new = state.replace(models={"generator": g, "discriminator": d}, aux=aux)
        return new, metrics

    def _ada_update(self, aux: dict, real_logits: jax.Array, step: jax.Array) -> dict:
        a = self.ada
        if a.target <= 0 or not self.groups:
            return aux
        aux["ada_sign_sum"] = aux["ada_sign_sum"] + jnp.sum(jnp.sign(real_logits))
        aux["ada_count"] = aux["ada_count"] + real_logits.shape[0]
        fire = (step + 1) % int(a.interval) == 0
        new_p = ada.ada_adjust(
            aux["ada_p"], aux["ada_sign_sum"], aux["ada_count"], a.target, a.kimg * 1000.0
        )
        aux["ada_p"] = jnp.where(fire, new_p, aux["ada_p"])
        aux["ada_sign_sum"] = jnp.where(fire, 0.0, aux["ada_sign_sum"])
        aux["ada_count"] = jnp.where(fire, 0.0, aux["ada_count"])
        return aux

    def sample(self, state: StyleGanState, rng: jax.Array, n: int, labels=None) -> jax.Array:
        """EMA G; truncation ψ towards the mean w (of the class, when conditional)."""
        kz, kl, kn = jax.random.split(rng, 3)
        params = state["generator"].ema_params
        g = self.generator
        if self.conditional and labels is None:
            labels = self._labels(kl, n)
        labels = labels if self.conditional else None
        w = g.apply(
            {"params": params}, jax.random.normal(kz, (n, self.z_dim)), labels, method=g.map
        )
        if self.truncation_psi != 1.0:
            center = w_avg(self, params, labels)
            w = center + self.truncation_psi * (w - center)
        img = self._synth(params, jnp.repeat(w[:, None], self.num_ws, axis=1), kn)
        return jnp.clip(img, -1.0, 1.0)


def w_avg(task: StyleGan2Task, params, labels, count: int = 2048) -> jax.Array:
    """Mean w over `count` fixed z (per label when conditional): the truncation centre."""
    g = task.generator
    z = jax.random.normal(jax.random.PRNGKey(0), (count, task.z_dim))
    if labels is None:
        return g.apply({"params": params}, z, None, method=g.map).mean(0)[None]
    per_class = jnp.stack(
        [
            g.apply({"params": params}, z, jnp.full((count,), c), method=g.map).mean(0)
            for c in range(task.num_classes)
        ]
    )
    return per_class[labels]


def make_task(config: ml_collections.ConfigDict) -> StyleGan2Task:
    """Factory named by `config.task` ('jaxsynth.tasks.stylegan2:make_task')."""
    return StyleGan2Task(config)
