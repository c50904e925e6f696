"""Zarr episode datasets: streaming writer, reader, sampler, normalizer, CLI (see DESIGN.md)."""
