"""Workflows over the library: training, evaluation rollouts, DAgger, recording, distillation pools."""
