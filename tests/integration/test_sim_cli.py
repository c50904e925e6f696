"""`mimic sim list|show` end to end: a real expert rollout rendered headless to PNG and MP4."""

import imageio.v3 as iio
import numpy as np
import pytest

from mimic.sim.cli import main


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "franka ur5e xarm7" in out and "pick_place" in out and "push_t" in out


@pytest.mark.parametrize("suffix", [".png", ".mp4"])
def test_show_writes_a_viewable_file(tmp_path, suffix):
    out = tmp_path / f"show{suffix}"
    assert main(["show", "ur5e", "reach", "--out", str(out), "--seed", "1", "--size", "48", "64"]) == 0
    img = iio.imread(out) if suffix == ".png" else iio.imread(out, index=None)
    assert img.shape[-1] == 3 and img.std() > 0


def test_bad_out_suffix_is_one_line_error(tmp_path, capsys):
    assert main(["show", "franka", "reach", "--out", str(tmp_path / "x.gif")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mimic sim show: error: --out {tmp_path / 'x.gif'}: use a .mp4 or .png file name", err


def test_show_push_t_strip_shows_the_block_reaching_the_goal(tmp_path, capsys):
    out = tmp_path / "push_t.png"
    assert main(["show", "franka", "push_t", "--out", str(out), "--seed", "3", "--size", "48", "64"]) == 0
    assert "success=True" in capsys.readouterr().out
    strip = iio.imread(out)
    assert strip.shape == (6 * 48, 2 * 64, 3)  # 6 moments, scene | wrist
    assert not np.array_equal(strip[:48], strip[-48:])  # the scene changed over the episode


def test_experts_prints_a_success_table(capsys):
    assert (
        main(["experts", "--arms", "xarm7", "--tasks", "reach", "push_t", "--episodes", "2", "--seed", "5"])
        == 0
    )
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("xarm7")]
    assert [r[:3] for r in rows] == [["xarm7", "reach", "100%"], ["xarm7", "push_t", "100%"]]


def test_paths_plots_several_demonstrations_from_one_start(tmp_path, capsys):
    out = tmp_path / "paths.png"
    assert main(["paths", "franka", "--seed", "4", "--expert-seeds", "3", "--out", str(out)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("expert seed")]
    assert len(lines) == 3 and all("success=True" in line for line in lines)
    assert len({line.split("ways round ")[1].split()[0] for line in lines}) >= 2  # not all the same way round
    img = iio.imread(out)
    assert img.shape[0] > 300 and img.std() > 10
