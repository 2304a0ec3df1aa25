"""Tests of actors/processes."""
