"""Tests of actors/limits."""
