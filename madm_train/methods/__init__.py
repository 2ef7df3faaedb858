"""Adaptation methods behind one interface (filled in by the method seam)."""
