import pytest

from llm_runtime.errors import ParameterError
from llm_runtime.speculation import PromptLookup, SpeculationConfig


def test_defaults_make_a_prompt_lookup_fed_with_the_prompt():
    p = SpeculationConfig().proposer([4, 5, 6, 4, 5])
    assert isinstance(p, PromptLookup) and p.propose(2) == [6, 4]


@pytest.mark.parametrize("kwargs,param", [({"method": "eagle"}, "speculation"),
                                          ({"num_speculative_tokens": 0}, "num_speculative_tokens"),
                                          ({"num_speculative_tokens": 2.5}, "num_speculative_tokens"),
                                          ({"min_n": 3, "max_n": 2}, "speculation")])
def test_bad_settings_name_their_parameter(kwargs, param):
    with pytest.raises(ParameterError) as e:
        SpeculationConfig(**kwargs)
    assert e.value.param == param
