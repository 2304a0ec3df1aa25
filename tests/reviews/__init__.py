"""Tests of actors/reviews."""
