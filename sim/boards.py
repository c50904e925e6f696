"""ChArUco calibration boards: the printed board's definition and the pieces that put it in a twin scene.

A ChArUco board is a chessboard whose white squares hold ArUco markers: the markers make every corner
identifiable (partial views and arbitrary rotations still work) and the chessboard corners give sub-pixel
accuracy. One `CharucoBoardSpec` describes the physical board (metres); the same spec renders the texture
the twin shows and builds OpenCV's board model for the detector (mimic.calibration.charuco), so the twin's
board and the detector's never disagree. It lives here, under the scenes that draw it, so the simulator
never reaches up into the calibration procedures that use it.

In a scene the board is a thin textured slab whose body frame *is* OpenCV's board frame (origin at the first
square's outer corner, x along the squares_x side, y along squares_y, z into the board), so poses reported
by PnP compare directly with MuJoCo's. The texture is written into the compiled model (no image file),
row 0 at texture coordinate v = 0, which the detector reads unmirrored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import mujoco
import numpy as np

BOARD_PX_PER_M = 4000.0  # texture resolution: 0.25 mm per texel, finer than any render we make


@dataclass(frozen=True)
class CharucoBoardSpec:
    """Physical board: squares_x x squares_y squares of `square_m`, markers of `marker_m`, white margin."""

    squares_x: int = 7
    squares_y: int = 5
    square_m: float = 0.04
    marker_m: float = 0.03
    dictionary: str = "DICT_4X4_50"
    margin_m: float = 0.01  # white border around the squares (part of the printed sheet)

    def __post_init__(self) -> None:
        if self.squares_x < 3 or self.squares_y < 3:
            raise ValueError(f"charuco board needs >= 3x3 squares, got {self.squares_x}x{self.squares_y}")
        if not 0 < self.marker_m < self.square_m:
            raise ValueError(
                f"charuco board: marker_m ({self.marker_m}) must lie in (0, square_m={self.square_m})"
            )
        if not hasattr(cv2.aruco, self.dictionary):
            raise ValueError(f"charuco board: unknown ArUco dictionary {self.dictionary!r}")

    @property
    def size_m(self) -> tuple[float, float]:
        """(width, height) of the printed sheet including the margin."""
        return (
            self.squares_x * self.square_m + 2 * self.margin_m,
            self.squares_y * self.square_m + 2 * self.margin_m,
        )

    def board(self) -> cv2.aruco.CharucoBoard:
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_m, self.marker_m, d)

    def image(self, px_per_m: float = 4000.0) -> np.ndarray:
        """The printed sheet as a uint8 grey image (rows top to bottom, board x to the right)."""
        w, h = (int(round(s * px_per_m)) for s in self.size_m)
        margin = int(round(self.margin_m * px_per_m))
        return self.board().generateImage((w, h), marginSize=margin, borderBits=1)

    def corner_points(self) -> np.ndarray:
        """[N, 3] chessboard corner positions in the board frame (m): OpenCV's, origin at the first square's corner."""
        return np.asarray(self.board().getChessboardCorners(), np.float64).reshape(-1, 3)

    def to_json(self) -> dict:
        return asdict(self)


def board_asset_xml(board: CharucoBoardSpec, name: str = "charuco") -> str:
    """<texture>/<material>/<mesh> for the board; the texture's pixels are filled by `apply_board_texture`."""
    img_h, img_w = board.image(BOARD_PX_PER_M).shape
    bw, bh = board.size_m
    m = board.margin_m
    x0, x1, y0, y1, z1 = -m, bw - m, -m, bh - m, 0.003
    verts = " ".join(f"{x} {y} {z}" for z in (0, z1) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))
    texcoord = " ".join(["0 0 1 0 1 1 0 1"] * 2)
    faces = (
        "0 2 1 0 3 2 4 5 6 4 6 7 0 1 5 0 5 4 1 2 6 1 6 5 2 3 7 2 7 6 3 0 4 3 4 7"  # face z=0 looks along -z
    )
    return (
        f'<texture name="{name}" type="2d" builtin="flat" width="{img_w}" height="{img_h}" rgb1="1 1 1"/>'
        f'<material name="{name}" texture="{name}" emission="0.7" specular="0" shininess="0"/>'
        f'<mesh name="{name}" vertex="{verts}" texcoord="{texcoord}" face="{faces}"/>'
    )


def apply_board_texture(model: mujoco.MjModel, board: CharucoBoardSpec, name: str = "charuco") -> None:
    """Write the board's printed image into the compiled model's texture (before any Renderer is made)."""
    img = board.image(BOARD_PX_PER_M)
    tid = model.texture(name).id
    h, w, n = model.tex_height[tid], model.tex_width[tid], model.tex_nchannel[tid]
    adr = model.tex_adr[tid]
    model.tex_data[adr : adr + h * w * n] = np.repeat(img.reshape(-1), n)


def board_center(board: CharucoBoardSpec, pose: np.ndarray) -> np.ndarray:
    """World position of the centre of the board's squares, for a board body at 4x4 `pose`."""
    bw, bh = board.size_m
    m = board.margin_m
    return (pose @ np.array([bw / 2 - m, bh / 2 - m, 0, 1.0]))[:3]
