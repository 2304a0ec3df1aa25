"""The vocabulary the actors speak: frozen pydantic v2 models, one module per conversation.

Facts are named in the past tense, commands in the imperative, questions start with ``Get``.
This package depends on the standard library and pydantic only.
"""
