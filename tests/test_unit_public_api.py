"""zq's one public face: ``zq.__all__`` and the exception tree."""

import inspect
import re
import types

import zq
import zq.errors


def all_groups() -> list[list[str]]:
    """The names of ``__all__`` as the source groups them under its comments."""
    source = inspect.getsource(zq)
    block = re.search(r"^__all__ = \[\n(.*?)^\]", source, re.S | re.M)
    assert block, "zq/__init__.py defines __all__ as a list literal"
    groups: list[list[str]] = []
    for line in block.group(1).splitlines():
        line = line.strip()
        if line.startswith("#"):
            groups.append([])
        elif line:
            groups[-1].extend(re.findall(r'"([^"]+)"', line))
    return groups


def test_all_is_grouped_and_sorted_within_each_group():
    groups = all_groups()
    assert len(groups) >= 2
    assert [name for group in groups for name in group] == zq.__all__
    for group in groups:
        assert group == sorted(group)


def test_all_has_no_duplicates():
    assert len(zq.__all__) == len(set(zq.__all__))


def test_every_name_in_all_resolves():
    for name in zq.__all__:
        assert getattr(zq, name) is not None, name


def test_all_lists_every_public_name():
    public = {name for name, value in vars(zq).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert public <= set(zq.__all__)
    assert set(zq.__all__) - public <= {"states"}


def test_every_exception_is_rooted_at_zq_error():
    for name, value in vars(zq.errors).items():
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, zq.ZqError), name


def test_every_exception_of_zq_errors_is_exported():
    exceptions = {name for name, value in vars(zq.errors).items()
                  if isinstance(value, type) and issubclass(value, zq.ZqError)}
    assert exceptions <= set(zq.__all__)


def test_timeout_error_is_zqs_own():
    assert zq.TimeoutError is zq.errors.TimeoutError
    assert zq.TimeoutError is not TimeoutError
