"""Task-specific geometry and planning that is too large to live inline in mimic.sim.env / mimic.sim.expert."""
