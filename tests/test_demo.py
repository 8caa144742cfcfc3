"""The main job: `lagjax demo` prints the programs, their solutions and a passing oracle table."""

from lagjax import demo
from lagjax.__main__ import main


def test_demo_prints_everything_and_passes(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo writes its graph, lagjax_demo.png, here
    assert main(["demo"]) == 0
    assert (tmp_path / "lagjax_demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    for text in [
        "a = exp(x)",
        "c = sum(a, b, y)",
        "λ (multiplier)",
        "gradient = λ[:d]",
        "multipliers_vs_grad",
        "implicit_function",
        "all oracles passed",
    ]:
        assert text in out


def test_blog_gradient_matches_the_hand_derivation():
    comp = demo.blog_program()
    for x in [-1.0, 0.0, 0.3]:
        assert abs(float(comp.gradient([x])[0]) - demo.blog_gradient(x)) <= 1e-12 * abs(demo.blog_gradient(x))
