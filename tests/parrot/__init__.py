"""A fourth agent CLI, ``parrot``, that exists only in the tests: one adapter module
(``adapter``) and its demo agent (``demo``), made known through the adapter registry.

It proves that a CLI is added in one place: nothing outside these two modules and the one
``register`` call knows it exists.
"""
