"""Tests of actors/history/history."""
