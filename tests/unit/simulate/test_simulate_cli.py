"""``dra-hami simulate``: output schema, plots, and clear errors (exit code 2, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dra_hami.cli import main

NODES = "sn,cpu_milli,memory_mib,gpu,model\nn1,16000,65536,2,T4\nn2,16000,65536,1,V100M32\n"
PODS = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"
    "a,1000,1024,1,500,\nb,2000,1024,1,300,\nc,1000,1024,2,1000,\nd,1000,1024,0,0,\ne,1000,1024,1,700,V100M32\n"
)


@pytest.fixture
def trace(tmp_path: Path) -> tuple[Path, Path]:
    nodes, pods = tmp_path / "nodes.csv", tmp_path / "pods.csv"
    nodes.write_text(NODES)
    pods.write_text(PODS)
    return nodes, pods


def invoke(*args: str):
    return CliRunner().invoke(main, ["simulate", *args], catch_exceptions=False)


def test_json_schema(trace: tuple[Path, Path]) -> None:
    nodes, pods = trace
    result = invoke("--nodes", str(nodes), "--pods", str(pods), "--seeds", "42..44", "--format", "json", "-q")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert list(out["policies"]) == ["binpack", "spread", "first-fit", "topology", "fragmentation"]
    for entry in out["policies"].values():
        for point in ("allocation_at_100", "allocation_at_130"):
            assert set(entry[point]) == {"mean", "sd"}
            assert 0 <= entry[point]["mean"] <= 100 and entry[point]["sd"] >= 0
        assert isinstance(entry["decision_ms_p99"], float) and entry["decision_ms_p99"] >= 0
        assert entry["seeds"] == [42, 43, 44]
    assert out["trace"]["gpus"] == 3 and out["trace"]["node_count"] == 2


def test_table_and_svg_plot(trace: tuple[Path, Path], tmp_path: Path) -> None:
    nodes, pods = trace
    plot = tmp_path / "alloc.svg"
    result = invoke(
        "--nodes", str(nodes), "--pods", str(pods), "--policy", "binpack,spread/binpack", "--seeds", "1",
        "--plot", str(plot), "--workers", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["policy", "node/gpu"]
    assert lines[2].startswith("binpack ") and lines[3].startswith("spread/binpack ")
    assert "binpack seed 1:" in result.stderr  # progress
    text = plot.read_text()
    assert text.startswith("<svg") and text.count("<polyline") == 2


def test_yaml_trace(tmp_path: Path) -> None:
    trace = tmp_path / "t.yaml"
    trace.write_text(
        "nodes:\n  - {name: n1, cpu_milli: 8000, memory_mib: 8192, gpu: 1, model: A10}\n"
        "pods:\n  - {name: p, cpu_milli: 1000, memory_mib: 1024, num_gpu: 1, gpu_milli: 250}\n"
    )
    result = invoke("--nodes", str(trace), "--pods", str(trace), "--policy", "binpack", "--seeds", "1",
                    "--format", "json", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    # 250-milli pods: 4 fill the A10 exactly; arrivals go to 1500 (150%) and allocation stays at 100%.
    assert json.loads(result.stdout)["policies"]["binpack"]["allocation_at_130"]["mean"] == 100.0


def test_unknown_policy_lists_valid_names(trace: tuple[Path, Path]) -> None:
    nodes, pods = trace
    result = invoke("--nodes", str(nodes), "--pods", str(pods), "--policy", "bestfit")
    assert result.exit_code == 2
    assert "unknown policy 'bestfit'; valid: binpack, spread, first-fit, topology, fragmentation, all" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("seeds", "message"), [("51..42", "is empty"), ("x", "not an integer"), ("1..", "not an integer")]
)
def test_bad_seeds(trace: tuple[Path, Path], seeds: str, message: str) -> None:
    nodes, pods = trace
    result = invoke("--nodes", str(nodes), "--pods", str(pods), "--seeds", seeds)
    assert result.exit_code == 2
    assert "--seeds" in result.stderr and message in result.stderr


def test_bad_row_names_file_line_and_column(trace: tuple[Path, Path]) -> None:
    nodes, pods = trace
    pods.write_text(PODS + "f,1000,1024,1,2000,\n")
    result = invoke("--nodes", str(nodes), "--pods", str(pods), "--seeds", "1")
    assert result.exit_code == 2
    assert f"{pods}:7: column 5 (gpu_milli): 2000 is out of range (must be between 1 and 1000)" in result.stderr
    assert "Traceback" not in result.output


def test_missing_file(trace: tuple[Path, Path], tmp_path: Path) -> None:
    _, pods = trace
    result = invoke("--nodes", str(tmp_path / "nope.csv"), "--pods", str(pods))
    assert result.exit_code == 2 and "nope.csv: cannot read" in result.stderr


def test_png_without_matplotlib_or_bad_suffix(trace: tuple[Path, Path], tmp_path: Path) -> None:
    nodes, pods = trace
    result = invoke("--nodes", str(nodes), "--pods", str(pods), "--plot", str(tmp_path / "x.pdf"))
    assert result.exit_code == 2 and "must end in .svg or .png" in result.stderr
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        result = invoke("--nodes", str(nodes), "--pods", str(pods), "--plot", str(tmp_path / "x.png"))
        assert result.exit_code == 2 and "PNG needs matplotlib" in result.stderr
        assert "dra-hami[plot]" in result.stderr  # the extra that brings it


def test_help_documents_the_protocol() -> None:
    result = CliRunner().invoke(main, ["simulate", "--help"])
    assert result.exit_code == 0
    for phrase in ("130%", "shuffled", "skipped", "gpu_spec", "fragmentation = binpack/fragmentation"):
        assert phrase in result.output


def test_a_plot_path_that_cannot_be_written_is_refused_before_the_replay(trace: tuple[Path, Path]) -> None:
    nodes, pods = trace
    result = CliRunner().invoke(
        main, ["simulate", "--nodes", str(nodes), "--pods", str(pods), "--seeds", "1", "--plot", "/nonexistent/x.svg"]
    )
    assert result.exit_code == 2
    assert "--plot" in result.output and "/nonexistent does not exist" in result.output
    assert "seed 1:" not in result.output  # nothing was replayed
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_results_are_printed_even_when_the_plot_fails(trace, tmp_path, monkeypatch) -> None:
    import dra_hami.simulate as sim

    def full_disk(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sim, "plot", full_disk)
    nodes, pods = trace
    result = CliRunner().invoke(
        main,
        ["simulate", "--nodes", str(nodes), "--pods", str(pods), "--seeds", "1", "--policy", "binpack",
         "--workers", "1", "-q", "--plot", str(tmp_path / "p.svg")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0].split()[:2] == ["policy", "node/gpu"]
    assert "No space left on device" in result.output and "the results are above" in result.output


def test_the_svg_legend_fits_the_longest_policy_name(trace: tuple[Path, Path], tmp_path: Path) -> None:
    import re

    nodes, pods = trace
    plot = tmp_path / "p.svg"
    policies = "first-fit/fragmentation,binpack"
    result = invoke("--nodes", str(nodes), "--pods", str(pods), "--seeds", "1", "--policy", policies, "--plot",
                    str(plot), "-q", "--workers", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    text = plot.read_text()
    width = float(re.search(r'<svg [^>]*width="(\d+)"', text).group(1))
    label = re.search(r'<text x="([\d.]+)" y="[\d.]+">(first-fit/fragmentation [^<]*)</text>', text)
    assert label, text
    # 7.5px per character is wider than any glyph of a 12px sans-serif label: the text ends inside the image.
    assert float(label.group(1)) + 7.5 * len(label.group(2)) <= width
