"""Measurement: timers, memory samplers, statistics."""
