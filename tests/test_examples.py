"""The optax training example runs, its loss falls and it writes the plot (a short run); with
-m slow, every other example runs to the end."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_with_optax.py"


def test_train_with_optax(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("train_with_optax", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    plot = tmp_path / "loss.png"
    assert example.main(["--steps", "40", "--plot", str(plot)]) == 0
    losses = [float(line.split()[3]) for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert losses[-1] < 0.25 * losses[0], losses
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


EXAMPLES = ["mlp", "mdp_values", "automaton_pathsum", "equilibrium", "ridge_hyperparameter", "hmm_expected_counts"]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name):
    """Each example runs to the end (10-30 s each: under -m slow). They print lagjax's answers beside
    independent ones; the same comparisons are asserted in tests/test_arrays.py and test_cycles.py."""
    path = EXAMPLE.parent / f"{name}.py"
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
