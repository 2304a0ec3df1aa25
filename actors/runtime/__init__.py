"""What the actors stand on: the process host, session files, prompts. No actors here."""
