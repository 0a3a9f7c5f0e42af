"""The one parser of a choice given as one flag per value (`--static` / `static: true`)."""

import pytest

from onnxopt.errors import OnnxoptError
from onnxopt.options import chosen_flag, exactly_one, fields_of
from onnxopt.quantize.config import QuantizeConfig

MODE = next(f for f in fields_of(QuantizeConfig) if f.spec.as_flags)


def test_the_one_flag_given_is_the_value():
    assert chosen_flag(MODE, {"static": False, "int4": True}) == "int4"
    assert chosen_flag(MODE, {}, none_ok=True) is None


def test_two_flags_or_none_are_refused_in_the_callers_words():
    with pytest.raises(OnnxoptError) as cli:
        chosen_flag(MODE, {"static": True, "dynamic": True}, none_ok=True)
    assert (cli.value.message, cli.value.hint) == (
        "choose exactly one of --static, --dynamic and --int4",
        "e.g. --static",
    )
    with pytest.raises(OnnxoptError) as recipe:
        chosen_flag(MODE, {}, "{}: true".format, verb="set")
    assert recipe.value.message == "set exactly one of static: true, dynamic: true and int4: true"
    assert recipe.value.hint == "e.g. static: true"
    assert exactly_one(MODE.spec.choices) == "choose exactly one of --static, --dynamic and --int4"
