"""Tests of actors/recovery/recovery."""
