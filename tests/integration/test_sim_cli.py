"""`mimic sim list|show` end to end: a real expert rollout rendered headless to PNG and MP4."""

import imageio.v3 as iio
import pytest

from sim.cli import main


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "franka ur5e xarm7" in out and "pick_place" in out


@pytest.mark.parametrize("suffix", [".png", ".mp4"])
def test_show_writes_a_viewable_file(tmp_path, suffix):
    out = tmp_path / f"show{suffix}"
    assert main(["show", "ur5e", "reach", "--out", str(out), "--seed", "1", "--size", "48", "64"]) == 0
    img = iio.imread(out) if suffix == ".png" else iio.imread(out, index=None)
    assert img.shape[-1] == 3 and img.std() > 0


def test_bad_out_suffix_is_one_line_error(tmp_path):
    with pytest.raises(SystemExit):
        main(["show", "franka", "reach", "--out", str(tmp_path / "x.gif")])
