import pytest

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.registry import Registry


def make():
    r = Registry("widget")
    r.register("alpha", lambda **kw: ("alpha", kw))
    r.register("beta", lambda **kw: ("beta", kw))
    r.register("alphabet", lambda **kw: ("alphabet", kw))
    return r


def test_duplicate_names_raise():
    r = make()
    with pytest.raises(ValueError, match="already registered"):
        r.register("alpha", object())


def test_list_is_sorted_and_filters_with_fnmatch():
    r = make()
    assert r.list() == ["alpha", "alphabet", "beta"]
    assert r.list("alpha*") == ["alpha", "alphabet"]
    assert r.list(["beta", "alphab?t"]) == ["alphabet", "beta"]
    assert r.list("zzz") == []


def test_get_builds_with_params():
    assert make().get("beta", x=1) == ("beta", {"x": 1})


def test_unknown_name_lists_choices_and_suggests():
    with pytest.raises(RobustEvalError) as exc:
        make().entry("alpah")
    msg = str(exc.value)
    assert "unknown widget 'alpah'" in msg and "Did you mean 'alpha'" in msg
    assert "alpha, alphabet, beta" in msg and "robust-eval list widgets" in msg
