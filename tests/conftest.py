from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def shared():
    """../shared (datasets, third-party models): tests that need it skip where users do not have it."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (it holds the UCR data and third-party models used by this test)")
    return SHARED
