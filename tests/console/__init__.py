"""Tests of actors/console/console."""
