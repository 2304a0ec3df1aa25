"""Tests of actors/cluster, with a real local Ray cluster."""
