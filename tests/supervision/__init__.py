"""Tests of actors/supervision."""
