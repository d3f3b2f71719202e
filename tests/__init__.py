"""The tests. Assertions in `tests.helpers` get pytest's messages too."""

import pytest

pytest.register_assert_rewrite("tests.helpers")
