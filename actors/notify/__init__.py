"""Notifications: webhooks and the desktop hear of questions, ends and limits (issue 26)."""
