"""textgen plot: learning curves of several model directories in one PNG; the curves come from the metrics."""

import json
import struct
import subprocess
import sys

import pytest
from click.testing import CliRunner

import textgen
from textgen.cli.main import cli
from textgen.errors import PlotError
from textgen.lab.curves import plot_curves, read_curves

SMALL = dict(layers=1, units=16, embedding_dim=8, seq_length=20, batch_size=32, max_steps=60, patience=0)


@pytest.fixture(scope="module")
def two_models(tiny_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("curves")
    for seed in (1, 2):
        textgen.train(str(tiny_corpus), out=root / f"seed{seed}", quiet=True, seed=seed, **SMALL)
    return root / "seed1", root / "seed2"


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_the_curves_are_the_metrics_of_the_run(two_models):
    metrics = json.loads((two_models[0] / "manifest.json").read_text())["metrics"]
    curves = read_curves(two_models[0])
    assert curves.name == "seed1"
    assert curves.train == [(p["step"], p["seconds"], p["loss"]) for p in metrics["train_curve"]]
    assert [step for step, _, _ in curves.train] == [25, 50]  # one point per 25 steps
    assert curves.validation == [(r["step"], r["seconds"], r["val_loss"]) for r in metrics["history"]]
    assert len(curves.validation) >= 3


def test_plot_writes_one_png_of_two_models_and_refuses_to_overwrite_it(two_models, tmp_path):
    out = tmp_path / "curves.png"
    runner = CliRunner()
    result = runner.invoke(cli, ["plot", *map(str, two_models), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and result.stderr == f"wrote {out}\n"
    assert png_size(out) == (1100, 420) and out.stat().st_size > 20_000
    written = out.read_bytes()

    again = runner.invoke(cli, ["plot", str(two_models[0]), "-o", str(out)])
    assert again.exit_code == 1
    assert again.stderr == f"Error: {out} already exists; pass --overwrite to replace it. Received: path='{out}'\n"
    assert out.read_bytes() == written

    replaced = runner.invoke(cli, ["plot", str(two_models[0]), "-o", str(out), "--overwrite"])
    assert replaced.exit_code == 0 and out.read_bytes() != written and png_size(out) == (1100, 420)


def test_a_model_written_before_the_curve_was_kept_plots_its_epoch_means(two_models, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(two_models[1], old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["metrics"]["train_curve"]  # the manifest itself is not hashed; its files are
    (old / "manifest.json").write_text(json.dumps(manifest))
    curves = read_curves(old)
    assert curves.train == [(r["step"], r["seconds"], r["train_loss"]) for r in manifest["metrics"]["history"]]
    manifest["metrics"] = {"history": [], "train_curve": []}
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PlotError, match="no loss curve"):
        read_curves(old)
    result = CliRunner().invoke(cli, ["plot", str(old), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "no loss curve" in result.stderr and not (tmp_path / "x.png").exists()


def test_plot_refuses_a_folder_and_a_missing_model(two_models, tmp_path):
    with pytest.raises(PlotError, match="a folder has the name"):
        plot_curves([read_curves(two_models[0])], tmp_path, overwrite=True)
    result = CliRunner().invoke(cli, ["plot", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "no model directory there" in result.stderr
    assert CliRunner().invoke(cli, ["plot", "-o", str(tmp_path / "x.png")]).exit_code == 2


def test_pyplot_is_imported_only_when_a_plot_is_drawn():
    # A fresh interpreter: whether pyplot was imported depends on everything before.
    script = """
import sys
import textgen.backend
stand_in = sys.modules["matplotlib.pyplot"]
assert type(stand_in).__name__ == "_DeferredPyplot", type(stand_in)
assert stand_in.__file__.endswith("pyplot.py")  # read without importing pyplot
assert type(sys.modules["matplotlib.pyplot"]).__name__ == "_DeferredPyplot"
from textgen.errors import PlotError
from textgen.lab.curves import pyplot
plt = pyplot(PlotError("matplotlib is missing"))
assert type(sys.modules["matplotlib.pyplot"]).__name__ == "module"
assert plt.get_backend().lower() == "agg" and stand_in.get_backend().lower() == "agg"
figure = plt.figure()
assert figure.number in plt.get_fignums()
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
