"""Task-specific geometry and planning that is too large to live inline in sim.env / sim.expert."""
