"""Whole sessions through the launcher: ids, unattended runs, faults."""
