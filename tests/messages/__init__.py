"""Tests of messages/."""
