"""handoff-lab: why a server that passes by hand fails under a test harness."""
