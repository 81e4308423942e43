"""LLMConfig: every door (generate, chat, batch, serve, batch --ray, serve --ray, the Python API) builds the same
config from the same settings, flag defaults are the dataclasses', and the Ray doors hand it whole to their
actors and replicas (checked on the arguments their constructors receive, without starting Ray)."""
import pickle
from dataclasses import fields

import pytest

from llm_runtime.cli.llm_args import ENGINE_FLAGS, flag_defaults, llm_config
from llm_runtime.cli.main import main, parser
from llm_runtime.engine import EngineConfig
from llm_runtime.graph.session import SessionConfig
from llm_runtime.llm import LLM
from llm_runtime.llm_config import LLMConfig
from llm_runtime.speculation import SpeculationConfig

FLAGS = ["--provider", "cpu", "--threads", "1", "--max-concurrency", "8", "--max-waiting", "32", "--token-budget",
         "64", "--chunk-size", "32", "--max-cache-bytes", "1000000", "--speculation", "ngram",
         "--num-speculative-tokens", "3"]
# door -> its command line less the shared flags
DOORS = {"generate": ["generate", "hello"], "chat": ["chat"], "batch": ["batch", "in.jsonl", "-o", "out.jsonl"],
         "serve": ["serve"], "batch --ray": ["batch", "in.jsonl", "-o", "out.jsonl", "--ray", "--replicas", "2"],
         "serve --ray": ["serve", "--ray", "--replicas", "2"]}


def parsed(door: str, flags: list[str]):
    argv = DOORS[door] + flags
    return parser(argv[0]).parse_args(argv)


def expected(model: str) -> LLMConfig:
    return LLMConfig(model, "cpu", SessionConfig(threads=1), EngineConfig(8, 32, 64, 32, 1_000_000),
                     SpeculationConfig("ngram", 3))


@pytest.mark.parametrize("door", DOORS)
def test_every_door_builds_the_same_config_from_the_same_flags(door, tiny_build):
    model = str(tiny_build("llama-gqa2"))
    assert llm_config(parsed(door, ["--model", model] + FLAGS)) == expected(model)


@pytest.mark.parametrize("door", DOORS)
def test_a_flag_left_out_keeps_the_dataclass_default(door):
    """serve's --max-waiting was 256 where EngineConfig (and every other door) said 1024."""
    assert llm_config(parsed(door, [])) == LLMConfig()
    assert LLMConfig().engine.max_waiting == EngineConfig().max_waiting


def test_help_shows_the_dataclass_defaults_and_every_engine_field_has_a_flag(capsys):
    assert set(ENGINE_FLAGS) == {f.name for f in fields(EngineConfig)}
    defaults = flag_defaults()
    assert defaults["max_concurrency"] == EngineConfig().max_concurrency
    assert defaults["num_speculative_tokens"] == SpeculationConfig().num_speculative_tokens
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert f"(default: {EngineConfig().max_waiting})" in shown and "(default: no cap)" in shown


def test_batch_on_ray_hands_its_actors_the_config(tiny_build):
    """What `batch()` passes to each BatchWorker's constructor (fn_constructor_kwargs), from the parsed flags;
    `run_on_ray` once left speculation out."""
    pytest.importorskip("ray")
    from llm_runtime.ray.batch import worker_arguments

    model = str(tiny_build("llama-gqa2"))
    args = parsed("batch --ray", ["--model", model] + FLAGS)
    kwargs = worker_arguments(llm_config(args), None, args.replicas)
    assert kwargs["config"] == expected(model) and kwargs["config"].speculation == SpeculationConfig("ngram", 3)
    assert pickle.loads(pickle.dumps(kwargs["config"])) == expected(model)  # Ray ships it to the actor


def test_serve_on_ray_hands_its_replicas_the_config(tiny_build):
    """The arguments Ray Serve passes to each LLMServer replica (the bound deployment's init args)."""
    pytest.importorskip("ray")
    from llm_runtime.server.ray_serve import application

    model = str(tiny_build("llama-gqa2"))
    args = parsed("serve --ray", ["--model", model] + FLAGS)
    app = application(llm_config(args), "tiny", replicas=args.replicas)
    config, name = app._bound_deployment.init_args[:2]  # Ray 2.60's Application keeps its bound deployment here
    assert config == expected(model) and name == "tiny"


def test_threads_left_at_0_are_divided_among_ray_replicas(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert LLMConfig().per_replica(2).session.threads == 4
    assert LLMConfig().per_replica(16).session.threads == 1
    assert LLMConfig.of(threads=3).per_replica(2).session.threads == 3


def test_the_python_api_goes_through_the_same_config(tiny_build):
    model = str(tiny_build("llama-gqa2"))
    llm = LLM(model, threads=1, engine=EngineConfig(8, 32, 64, 32, 1_000_000), speculation="ngram",
              num_speculative_tokens=3)
    assert llm.config == expected(model)
    assert llm.engine.config == expected(model).engine and llm.engine.speculator.config == SpeculationConfig("ngram", 3)
    assert LLM(expected(model)).config == expected(model)
    with pytest.raises(TypeError, match="LLMConfig"):
        LLM(expected(model), threads=2)


def test_bad_flag_values_are_one_error_line_naming_the_field(capsys):
    assert main(["serve", "--max-waiting", "0"]) == 2
    assert "max_waiting must be an integer >= 1" in capsys.readouterr().err
    assert main(["generate", "--max-concurrency", "0", "hi"]) == 2
    assert "max_concurrency" in capsys.readouterr().err


LORA_FLAGS = ["--lora", "a=x", "--lora-modules", "b=y", "c=p=q", "--max-loras", "2", "--max-lora-mb", "1.5",
              "--lora-targets", "q,v"]


@pytest.mark.parametrize("door", DOORS)
def test_every_door_takes_the_lora_flags(door):
    from llm_runtime.adapters import LoraConfig

    lora = LoraConfig(("q", "v"), max_slots=2, max_bytes=3 << 19)
    assert llm_config(parsed(door, LORA_FLAGS)) == LLMConfig(lora=lora, adapters=(("a", "x"), ("b", "y"), ("c", "p=q")))
    assert llm_config(parsed(door, ["--enable-lora"])) == LLMConfig(lora=LoraConfig())
    assert llm_config(parsed(door, ["--lora", "a=x"])).lora == LoraConfig()  # an adapter to load needs a LoRA build


def test_lora_flags_show_their_defaults_and_refuse_bad_values(capsys):
    from llm_runtime.adapters import LoraConfig

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert f"(default: {LoraConfig().max_slots})" in shown and f"(default: {','.join(LoraConfig().targets)})" in shown
    for flags, message in ((["--lora", "nopath"], "--lora takes NAME=PATH, got 'nopath'"),
                           (["--lora", "a=x", "--lora", "a=y"], "--lora names 'a' twice"),
                           (["--lora-targets", "q,lm_head"], "LoRA targets must be among"),
                           (["--max-loras", "0"], "max_slots must be >= 1")):
        assert main(["generate", *flags, "hi"]) == 2
        assert message in capsys.readouterr().err


def test_serve_on_ray_hands_its_replicas_the_adapters(tiny_build, capsys):
    """Each replica loads the --lora adapters by path from the config it is given (LLMServer's init args)."""
    pytest.importorskip("ray")
    from llm_runtime.adapters import LoraConfig
    from llm_runtime.model_builder.contract import LORA_TARGETS
    from llm_runtime.server.ray_serve import application

    model = str(tiny_build("llama-gqa2", lora_targets=LORA_TARGETS))
    args = parsed("serve --ray", ["--model", model, "--lora", "a=/adapters/a", "--max-loras", "2"])
    config = application(llm_config(args), "tiny", replicas=args.replicas)._bound_deployment.init_args[0]
    assert config.adapters == (("a", "/adapters/a"),) and config.lora == LoraConfig(max_slots=2)
    assert pickle.loads(pickle.dumps(config)) == config
    assert main(["serve", "--ray", "--model", model, "--allow-adapter-updates"]) == 2
    assert "--allow-adapter-updates is not supported with --ray" in capsys.readouterr().err
