"""Registry references are checked before anything is sent: a name the registry would refuse
gets an error that says what a valid one looks like (not the registry's raw answer)."""

from __future__ import annotations

import pytest

from errors import InvalidInput
from neural_memory.registry import parse_reference


@pytest.mark.parametrize("ref, repository", [
    ("localhost:5000/memories/notes:v1", "memories/notes"),
    ("localhost:5000/notes:v1", "notes"),
    ("registry.example.com/team-a/py_notes.v2:latest", "team-a/py_notes.v2"),
    ("localhost:5000/notes@sha256:" + "a" * 64, "notes"),
])
def test_valid_references(ref, repository):
    assert parse_reference(ref).api_prefix == repository


@pytest.mark.parametrize("ref, words", [
    ("notes:v1", ["registry host"]),
    ("localhost:5000/Memories/Notes:v1", ["'Memories/Notes'", "lowercase"]),
    ("localhost:5000/notes_:v1", ["'notes_'", "lowercase"]),
])
def test_references_a_registry_would_refuse_say_what_to_fix(ref, words):
    with pytest.raises(InvalidInput) as caught:
        parse_reference(ref)
    assert all(w in str(caught.value) for w in words), caught.value
