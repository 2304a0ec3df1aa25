"""The live dashboard: static files served by the gateway actor."""
