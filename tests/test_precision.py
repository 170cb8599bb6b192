"""bfloat16 compute with float32 parameters (`config.train.compute_dtype`), on the GAN task.

Proves: the convolutions of the compiled step really run in bfloat16 (their operands in the
jaxpr), while parameters, optimiser state and BatchNorm statistics stay float32 through training;
a few engine steps give finite losses on CPU and stay close to the float32 run; a bad dtype name
is a one-line UserError.
"""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsynth.errors import UserError
from jaxsynth.train.precision import cast_floats, compute_dtype, like
from jaxsynth.train.task import build_task


def test_cast_floats_and_like():
    tree = {"w": jnp.ones((2,), jnp.float32), "label": jnp.arange(3)}
    out = cast_floats(tree, jnp.bfloat16)
    assert out["w"].dtype == jnp.bfloat16 and out["label"].dtype == tree["label"].dtype
    assert cast_floats(tree, jnp.float32) is tree
    back = like(out, tree)
    assert back["w"].dtype == jnp.float32
    np.testing.assert_array_equal(back["w"], tree["w"])


def test_bad_compute_dtype_is_a_user_error():
    from test_engine import smoke

    with pytest.raises(UserError, match="train.compute_dtype='float16' is not one of"):
        compute_dtype(smoke(**{"train.compute_dtype": "float16"}))


def conv_operand_dtypes(config) -> set[str]:
    task = build_task(config)
    b = config.batch_size
    batch = {
        "image": jnp.zeros((b, config.image_size, config.image_size, 3), jnp.float32),
        "label": jnp.zeros((b,), jnp.int32),
    }
    state = jax.eval_shape(task.init, jax.random.PRNGKey(0), batch)
    jaxpr = jax.make_jaxpr(task.train_step)(state, batch, jax.random.PRNGKey(1))
    dtypes: set[str] = set()

    def walk(j):
        for eqn in j.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                dtypes.update(str(v.aval.dtype) for v in eqn.invars)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    return dtypes


def test_bf16_step_convolves_in_bf16_and_f32_does_not():
    from test_engine import smoke

    assert conv_operand_dtypes(smoke(**{"train.compute_dtype": "bfloat16"})) == {"bfloat16"}
    assert conv_operand_dtypes(smoke()) == {"float32"}


def test_bf16_training_is_finite_keeps_float32_state_and_tracks_float32(tmp_path):
    from test_engine import smoke, tiny_data

    from jaxsynth.train.loop import train

    quiet = {"train.sample_every": 0, "train.ssim_every": 0, "checkpoint_every": 100}
    f32 = train(smoke(num_steps=3, **quiet), tmp_path / "f32", tiny_data())
    bf16 = train(
        smoke(num_steps=3, **quiet, **{"train.compute_dtype": "bfloat16"}),
        tmp_path / "bf16",
        tiny_data(),
    )
    leaves_32, leaves_16 = jax.tree.leaves(f32.state), jax.tree.leaves(bf16.state)
    assert [x.dtype for x in leaves_16] == [x.dtype for x in leaves_32]
    g16 = bf16.state["generator"].params
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(g16))
    for x, y in zip(leaves_16, leaves_32, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if np.issubdtype(x.dtype, np.floating):
            assert np.all(np.isfinite(x))
            # 3 Adam steps of lr 2e-4 move params by <= ~6e-4; bf16 noise must stay well below
            # the size of the whole update, not equal float32 bit for bit.
            np.testing.assert_allclose(x, y, atol=5e-3, rtol=5e-2)
    metrics = [line for line in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    assert metrics and all("NaN" not in m and "Infinity" not in m for m in metrics)
