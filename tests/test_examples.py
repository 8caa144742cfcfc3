"""The optax training example runs, its loss falls and it writes the plot (a short run)."""

import importlib.util
import pathlib

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
