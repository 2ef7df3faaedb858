"""The trainer every method plugs into, and what it owns: EMA teacher, schedule, checkpoints, evaluation."""
