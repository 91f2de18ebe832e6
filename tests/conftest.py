"""Shared fixtures: the real frozen LLM is loaded once per test session."""
import pytest


@pytest.fixture(scope="session")
def smollm2():
    from backbones import load_llm

    return load_llm("smollm2-135m")
