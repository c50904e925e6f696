"""The `mimic` command: one entry point that dispatches to each package's own CLI module."""
