"""Outputs appear whole or not at all: dataset outputs are built in a hidden sibling and renamed on success,
a failed write leaves neither the output nor the sibling, and outputs that share a path are refused in one
line before anything is written."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from mimic.data.cli import main
from mimic.data.dataset import DatasetError
from mimic.data.staging import staged_output, staging_sibling, stale_siblings

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from mimic.workflows.record_expert import record_expert_dataset

    return record_expert_dataset(
        tmp_path_factory.mktemp("staged") / "src.zarr", "franka", "reach", 3, progress=False
    )


def cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue().strip()


def names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_the_output_is_absent_until_the_write_succeeds_and_keeps_its_suffixes(tmp_path):
    final = tmp_path / "out.zarr.zip"
    assert staging_sibling(final).name.endswith(".zarr.zip") and staging_sibling(final).name.startswith(
        ".out.tmp-"
    )
    with staged_output(final) as where:
        Path(where).write_text("partial")
        assert (
            not final.exists()
        )  # a kill here leaves only the hidden sibling, never a finished-looking output
    assert final.read_text() == "partial" and names(tmp_path) == ["out.zarr.zip"]


def test_a_failed_write_leaves_nothing_and_its_error_names_the_output(tmp_path):
    final = tmp_path / "out.zarr"
    with pytest.raises(DatasetError, match=rf"^{final}: broken$"):
        with staged_output(final) as where:
            Path(where).mkdir()
            (Path(where) / "chunk").write_text("x")
            raise DatasetError(f"{where}: broken")
    assert names(tmp_path) == []


def test_merge_and_split_write_whole_outputs_and_leave_no_sibling(store, tmp_path):
    code, out, err = cli(["merge", str(store), str(store), "-o", str(tmp_path / "m.zarr")])
    assert code == 0, err
    assert out.startswith(f"wrote {tmp_path / 'm.zarr'}: 6 episodes")
    code, out, err = cli(
        [
            "split",
            str(tmp_path / "m.zarr"),
            "--train",
            str(tmp_path / "tr.zarr"),
            "--val",
            str(tmp_path / "va.zarr"),
        ]
    )
    assert code == 0, err
    assert names(tmp_path) == ["m.zarr", "tr.zarr", "va.zarr"]
    assert cli(["validate", str(tmp_path / "va.zarr")])[0] == 0


def test_a_split_that_fails_half_way_leaves_neither_output(store, tmp_path, monkeypatch):
    from mimic.data import transform

    real, calls = transform._copy, []

    def copy_then_fail_the_second(sources, out):  # fault injection: the val copy fails after writing rows
        calls.append(real(sources, out))
        if len(calls) == 2:
            raise DatasetError(f"{out}: chunk unreadable")
        return calls[-1]

    monkeypatch.setattr(transform, "_copy", copy_then_fail_the_second)
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = cli(["split", str(store), "--train", str(out / "tr.zarr"), "--val", str(out / "va.zarr")])
    assert code == 1 and err == f"mimic dataset split: error: {out / 'va.zarr'}: chunk unreadable", err
    assert len(calls) == 2 and names(out) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["split", "{src}", "--train", "{tmp}/tr.zarr", "--val", "{tmp}/./tr.zarr"],
        ["split", "{src}", "--train", "{tmp}/tr.zarr", "--val", "{tmp}/x/../tr.zarr/"],
        ["merge", "{src}", "{tmp}/../{tmpname}/m.zarr", "-o", "{tmp}/m.zarr"],
    ],
)
def test_outputs_sharing_a_path_are_refused_in_one_line_before_writing(store, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    argv = [a.format(src=store, tmp=tmp_path, tmpname=tmp_path.name) for a in argv]
    if argv[0] == "merge":
        shutil.copytree(store, tmp_path / "m.zarr")
        before = names(tmp_path)
    else:
        before = []
    code, _, err = cli(argv)
    assert code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(f"mimic dataset {argv[0]}: error:"), err
    assert names(tmp_path) == before


def test_merge_refuses_its_own_input_as_output(store, tmp_path):
    from mimic.data.transform import merge

    with pytest.raises(DatasetError, match=r"^merge: the output .* is also an input$"):
        merge([str(store), str(tmp_path / "other.zarr")], str(store))


def test_siblings_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    final = tmp_path / "out.zarr"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = staging_sibling(final, dead.pid)
    running = staging_sibling(final, os.getppid())  # a writer that still runs keeps its sibling
    for sibling in (killed, running):
        sibling.mkdir()
        (sibling / "chunk").write_text("partial")
    assert stale_siblings(final) == [killed]
    with staged_output(final) as where:
        Path(where).mkdir()
    assert names(tmp_path) == sorted(["out.zarr", running.name])
