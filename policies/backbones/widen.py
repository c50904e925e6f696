"""Function-preserving widening of a trained Conv UNet (Net2WiderNet, Chen, Goodfellow & Shlens 2016).

Why: to give a trained policy more capacity without relearning what it already knows. A net trained from
scratch at the new width would start over; the widened net starts as exactly the function of the narrow one (a
teacher, a student distilled so far, a policy after its DAgger rounds) and training goes on from there with m
times the channels. Used by `init_from` and by a consistency student wider than its teacher (the push_t DDPM
chain in docs/results.md continues a widened policy).

How: every level's C channels become m*C. New channel j copies old channel L(j), laid out so that each
GroupNorm group of the wide net holds m copies of exactly the channels of the same old group: the group's
mean and variance, hence every activation, are unchanged. A layer reading widened channels sees each old
input m times; its weights are split among the copies in random shares that sum to one, which keeps the
function exact and breaks the symmetry between copies (equal shares would give copies equal gradients forever).
"""

from __future__ import annotations

import re

import torch

from mimic.policies.backbones.unet import ConditionalUnet1D


def channel_map(c_old: int, m: int, groups: int) -> torch.Tensor:
    """[m * c_old] old channel of each wide channel; wide group g holds m copies of old group g's channels."""
    gs = c_old // groups
    j = torch.arange(m * c_old)
    return (j // (m * gs)) * gs + (j % (m * gs)) % gs


def _split_shares(rows: int, in_map: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """[rows, len(in_map)] positive shares; for every row, the shares of one old input's copies sum to one."""
    u = torch.rand(rows, len(in_map), generator=gen) + 0.5
    sums = torch.zeros(rows, int(in_map.max()) + 1).index_add_(1, in_map, u)
    return u / sums[:, in_map]


def _dim_map(size_old: int, size_new: int, m: int, groups: int, halves: bool) -> torch.Tensor | None:
    """The old index of each new index along one dimension; None where the dimension is not widened."""
    if size_new == size_old:
        return None
    if size_new != m * size_old:
        raise ValueError(f"a dimension of {size_old} cannot widen to {size_new} (multiple {m})")
    if not halves:
        return channel_map(size_old, m, groups)
    h = size_old // 2  # two levels side by side (FiLM's scale|bias, an up block's [x, skip] input)
    return torch.cat([channel_map(h, m, groups), h + channel_map(h, m, groups)])


def widen_unet_state(
    narrow: dict[str, torch.Tensor],
    narrow_dims: list[int],
    wide: ConditionalUnet1D,
    wide_dims: list[int],
    groups: int,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """`wide`'s state dict holding the function of the narrow UNet whose state is `narrow`."""
    ratios = (
        {w / n for n, w in zip(narrow_dims, wide_dims, strict=True)}
        if len(narrow_dims) == len(wide_dims)
        else set()
    )
    if len(ratios) != 1 or (m := next(iter(ratios))) != int(m) or m < 1:
        raise ValueError(
            f"policy.unet.down_dims {list(wide_dims)} is not one whole multiple of {list(narrow_dims)}"
        )
    m = int(m)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, target in wide.state_dict().items():
        src = narrow[key]
        if src.shape == target.shape:
            out[key] = src.clone()
            continue
        film = re.search(r"\.film\.1\.", key) is not None
        up_input = re.match(r"up\.\d+\.0\.(block1\.0|short)\.weight$", key) is not None
        transposed = re.match(r"up\.\d+\.2\.weight$", key) is not None  # ConvTranspose1d: [in, out, k]
        w = src.transpose(0, 1) if transposed else src
        t_shape = (target.shape[1], target.shape[0], *target.shape[2:]) if transposed else target.shape
        out_map = _dim_map(w.shape[0], t_shape[0], m, groups, halves=film)
        w = w if out_map is None else w[out_map]
        if w.dim() >= 2 and not film:
            in_map = _dim_map(w.shape[1], t_shape[1], m, groups, halves=up_input)
            if in_map is not None:
                shares = _split_shares(w.shape[0], in_map, gen).to(w.dtype)
                w = w[:, in_map] * shares.view(*shares.shape, *([1] * (w.dim() - 2)))
        out[key] = (w.transpose(0, 1) if transposed else w).contiguous()
        if out[key].shape != target.shape:
            raise ValueError(f"widen: {key} came out {tuple(out[key].shape)}, want {tuple(target.shape)}")
    return out
