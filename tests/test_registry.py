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


def test_describe_asks_the_entry_then_its_description_then_its_docstring():
    class Described:
        """Not this."""

        description = "nor this"

        @classmethod
        def describe(cls) -> str:
            return "from describe()"

    class Attribute:
        """Not this."""

        description = "from description"

    class Documented:
        """From the docstring's first line.

        Not the rest.
        """

    r = Registry("widget")
    for name, entry in [("a", Described), ("b", Attribute), ("c", Documented), ("d", lambda: None)]:
        r.register(name, entry)
    assert [r.describe(n) for n in r.list()] == ["from describe()", "from description",
                                                  "From the docstring's first line.", ""]
    with pytest.raises(RobustEvalError, match="unknown widget 'e'"):
        r.describe("e")


def test_listing_rows_are_usage_and_description_sorted_and_filtered():
    class Takes:
        usage = "takes:PATH"
        description = "takes an argument"

    class Plain:
        description = "plain"

    r = Registry("widget")
    r.register("takes", Takes)
    r.register("plain", Plain)
    assert r.listing() == [("plain", "plain"), ("takes:PATH", "takes an argument")]
    assert r.listing("t*") == [("takes:PATH", "takes an argument")]


def test_suites_in_order_and_full_expands_to_every_suite_once():
    from robustbench_lite.suites import SUITES, expand_suites, full_suites, ordered_suites

    assert full_suites() == ["clean", "adversarial", "corruptions", "shift", "efficiency"]
    # every suite is in order; full runs all but the analyses asked for by name (monitor)
    assert [s.name for s in ordered_suites()] == ["clean", "adversarial", "corruptions", "shift", "monitor",
                                                  "efficiency"]
    assert sorted(full_suites() + ["monitor"]) == SUITES.list()
    assert expand_suites(["shift", "full", "clean", "all"]) == ["shift", "clean", "adversarial", "corruptions",
                                                                "efficiency"]


def test_every_suite_has_its_metadata_and_report_partial():
    from importlib import resources

    from robustbench_lite.suites import SUITES

    partials = resources.files("robustbench_lite.report").joinpath("partials")
    for name, suite in SUITES.items():
        assert suite.name == name and suite.title and SUITES.describe(name) == suite.description
        assert isinstance(suite.order, int) and isinstance(suite.rank0_only, bool)
        assert all(m.key and m.label for m in suite.headline_metrics)
        assert partials.joinpath(f"{name}.html").is_file(), f"report/partials/{name}.html is missing"
    assert len({s.order for _, s in SUITES.items()}) == len(SUITES)  # no ties: the order is the registry's
