"""Tests of actors/files."""
