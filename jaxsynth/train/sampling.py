"""Drawing images from a trained model's EMA params (used by `jaxsynth sample` and the study).

One compiled sampling call of `CHUNK` images is reused for every chunk; each chunk's key is
`fold_in(PRNGKey(seed), chunk_index)`, so the images depend only on the seed and their index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxsynth.errors import UserError

CHUNK = 64  # images per jitted sampling call (one compilation, bounded memory)


def resolve_label(config, conditional: bool, label: str | None) -> int | None:
    """Class index for `label`, checked against what the model can produce."""
    classes = tuple(config.data.get("classes", ()))
    trained_on = tuple(config.data.get("train_classes", classes))
    if label is None:
        return None
    if label not in classes:
        raise UserError(f"--label {label}: unknown class (classes: {', '.join(classes)})")
    if not conditional and trained_on != (label,):
        raise UserError(
            f"--label {label}: this model is unconditional and was trained on "
            f"{', '.join(trained_on)} only"
        )
    return classes.index(label) if conditional else None


def sample_images(
    task,
    state,
    config,
    *,
    num: int,
    seed: int,
    label: str | None = None,
    options: dict | None = None,
    masks: np.ndarray | None = None,
    progress=None,
) -> tuple[np.ndarray, np.ndarray]:
    """`num` uint8 images (N, H, W, 3) and their int32 labels from the task's sampler.

    Unconditional models trained on one class get that class's label; conditional models draw
    `label` (or random labels when None). `options` (sampler, steps, eta, guidance) and `masks`
    (float {0, 1} (N, H, W, 1), one per image) go to tasks with `sample_with_options` (DDPM).
    """
    import jax
    import jax.numpy as jnp

    from jaxsynth.train.visuals import to_uint8

    if num <= 0:
        raise UserError(f"--num {num}: must be a positive number of images")
    conditional = bool(getattr(task, "conditional", False))
    label_idx = resolve_label(config, conditional, label)
    n_chunk = min(CHUNK, num)
    with_options = hasattr(task, "sample_with_options")
    if (options or masks is not None) and not with_options:
        raise UserError(
            f"--sampler/--steps/--eta/--guidance/--masks: task '{task.name}' has no such options"
        )
    if with_options:
        opts = task.sampler_options(**(options or {}))
        draw = jax.jit(
            lambda st, rng, lb, m: task.sample_with_options(
                st, rng, n_chunk, labels=lb, masks=m, options=opts
            )
        )
    else:
        draw = jax.jit(lambda st, rng, lb, m: task.sample(st, rng, n_chunk, lb))
    if masks is not None and len(masks) < num:
        raise UserError(f"--masks: {len(masks)} masks for {num} images")
    base = jax.random.PRNGKey(seed)
    images, labels = [], []
    for i, start in enumerate(range(0, num, n_chunk)):
        take = min(n_chunk, num - start)
        if conditional:
            lb = (
                jnp.full((n_chunk,), label_idx, jnp.int32)
                if label_idx is not None
                else jax.random.randint(
                    jax.random.fold_in(base, 10_000 + i),
                    (n_chunk,),
                    0,
                    int(config.model.num_classes),
                )
            )
        else:
            lb = None
        m = None
        if masks is not None:
            m = np.zeros((n_chunk, *masks.shape[1:]), np.float32)
            m[:take] = masks[start : start + take]
        x = to_uint8(np.asarray(draw(state, jax.random.fold_in(base, i), lb, m)))
        images.append(x[:take])
        labels.append(np.asarray(lb)[:take] if lb is not None else np.full(take, -1))
        if progress:
            progress(start + take, num)
    images_np = np.concatenate(images)
    labels_np = np.concatenate(labels).astype(np.int32)
    if not conditional:
        trained_on = tuple(config.data.get("train_classes", ()))
        classes = tuple(config.data.get("classes", ()))
        if len(trained_on) == 1 and trained_on[0] in classes:
            labels_np[:] = classes.index(trained_on[0])
    return images_np, labels_np


def sample_from_workdir(
    workdir: str | Path,
    *,
    num: int,
    seed: int,
    label: str | None = None,
    step: int | None = None,
    progress=None,
):
    """Load the latest (or `step`) checkpoint of a run and sample from it."""
    from jaxsynth.train.checkpoint import load_trained
    from jaxsynth.train.task import has_sampler

    task, state, config, _ = load_trained(workdir, step)
    if not has_sampler(task):
        raise UserError(f"--workdir {workdir}: task '{task.name}' cannot sample images")
    return sample_images(task, state, config, num=num, seed=seed, label=label, progress=progress)
