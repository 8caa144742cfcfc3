"""A batch of inputs sharded over 4 host CPU devices: `jax.vmap` of `as_function` under `jax.jit`.

The device count is fixed when JAX starts, so the check runs in a fresh interpreter with
`XLA_FLAGS=--xla_force_host_platform_device_count=4` set before it imports jax.
"""

import os
import pathlib
import subprocess
import sys

SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from lagjax import testing

assert jax.device_count() == 4, jax.devices()
comp, x = testing.random_program(200, d=3, depth=6, seed=1)
xs = x + 0.1 * np.random.default_rng(0).normal(size=(8, comp.d))
mesh = Mesh(np.array(jax.devices()), ("batch",))
sharded = jax.device_put(xs, NamedSharding(mesh, PartitionSpec("batch")))
batched = jax.jit(jax.vmap(jax.value_and_grad(comp.as_function())))
values, grads = batched(sharded)
expected_values, expected_grads = batched(jnp.asarray(xs))  # the same, on one device
for out in (values, grads):
    assert len(out.sharding.device_set) == 4 and not out.sharding.is_fully_replicated, out.sharding
    assert {s.data.shape[0] for s in out.addressable_shards} == {2}, [s.data.shape for s in out.addressable_shards]
assert testing.relative_error(values, expected_values) <= 1e-12
assert testing.relative_error(grads, expected_grads) <= 1e-12
assert testing.relative_error(grads[0], comp.gradient(xs[0])) <= 1e-10
print("sharded over", len(grads.sharding.device_set), "devices:", grads.sharding.spec)
"""


def test_a_batch_sharded_over_four_devices_matches_one_device():
    root = pathlib.Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["JAX_PLATFORMS"] = "cpu"  # the forced device count is of host CPU devices, even where a GPU exists
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sharded over 4 devices" in result.stdout
