"""The config tree: defaults, recipe merging, `a.b=c` overrides, type and key errors, finalize(), save(), docs, CLI.

Every error test checks that the message names what the user must change (the key, the file or
override, and the nearest valid key or the allowed values), since that message is the whole UI
of a bad recipe. The derived numbers of finalize() are worked by hand in comments.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grpo.config import Config, ConfigError
from grpo.recipe import field_docs, load_config
from grpo.errors import UserError

REPO = Path(__file__).resolve().parents[2]
TRAIN_FILES = "data.train_files=[train.parquet]"  # finalize() needs at least one prompt file


def write_recipe(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(*args, **kwargs) -> str:
    """The message of the ConfigError that load_config(*args, **kwargs) raises."""
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------- defaults, recipes, overrides


def test_defaults_load_without_recipe():
    cfg = load_config()
    # The R1-Zero defaults promised in config.py's docstring: GRPO, n=8, lr 1e-6, k3 KL 0.001, ZeRO-3, bf16.
    assert (cfg.algo.advantage, cfg.rollout.n, cfg.train.lr) == ("grpo", 8, 1e-6)
    assert (cfg.algo.kl_estimator, cfg.algo.kl_coef) == ("k3", 0.001)
    assert (cfg.train.zero_stage, cfg.model.dtype) == (3, "bfloat16")
    assert cfg.source == "<defaults>"
    assert cfg.to_dict() == Config().to_dict()


def test_config_error_is_a_user_error_with_exit_code_2():
    assert issubclass(ConfigError, UserError)
    assert ConfigError("x").exit_code == 2


def test_recipe_merges_keys_into_sections_and_keeps_other_defaults(tmp_path):
    recipe = write_recipe(tmp_path, "train:\n  max_steps: 5\n  lr: 1.0e-4\nrollout:\n  stop: ['</answer>']\n")
    cfg = load_config(recipe)
    assert cfg.train.max_steps == 5
    assert cfg.train.lr == 1e-4
    assert cfg.rollout.stop == ["</answer>"]
    # Keys the recipe does not name keep their defaults, in the same section and in others.
    assert cfg.train.prompts_per_step == 64
    assert cfg.rollout.n == 8
    assert cfg.source == str(recipe)


def test_empty_recipe_gives_defaults(tmp_path):
    cfg = load_config(write_recipe(tmp_path, "# only a comment\n"))
    cfg.source = "<defaults>"
    assert cfg.to_dict() == Config().to_dict()


def test_overrides_apply_after_the_recipe(tmp_path):
    recipe = write_recipe(tmp_path, "train:\n  max_steps: 5\n")
    cfg = load_config(recipe, ["train.max_steps=7", "model.path=my/model"])
    assert cfg.train.max_steps == 7  # the override wins over the recipe's 5
    assert cfg.model.path == "my/model"


@pytest.mark.parametrize("override, expected", [
    ("train.lr=1e-4", 1e-4),    # YAML 1.1 reads this as the string '1e-4'; the float field accepts it
    ("train.lr=1.0e-4", 1e-4),  # YAML 1.1 reads this as the float 0.0001
    ("train.lr=3", 3.0),        # an int for a float field becomes a float
    ("algo.clip_high=0.28", 0.28),
])
def test_float_overrides(override, expected):
    cfg = load_config(None, [override])
    section, key = override.split("=")[0].split(".")
    got = getattr(getattr(cfg, section), key)
    assert got == expected
    assert type(got) is float


def test_float_written_1e_minus_4_in_a_recipe_is_a_float(tmp_path):
    cfg = load_config(write_recipe(tmp_path, "train:\n  lr: 1e-4\n"))
    assert cfg.train.lr == 1e-4 and type(cfg.train.lr) is float


def test_float_list_items_accept_exponent_strings():
    cfg = load_config(None, ["train.betas=[0.9, 1e-3]"])
    assert cfg.train.betas == [0.9, 0.001]
    assert all(type(b) is float for b in cfg.train.betas)


def test_int_override_is_an_int():
    cfg = load_config(None, ["train.max_steps=10"])
    assert cfg.train.max_steps == 10 and type(cfg.train.max_steps) is int


@pytest.mark.parametrize("override, expected", [
    ("data.train_files=[a.parquet,b.jsonl]", ["a.parquet", "b.jsonl"]),
    ("data.train_files=a.parquet", ["a.parquet"]),  # a single string becomes a one-element list
    ("rollout.stop=</answer>", ["</answer>"]),
    ("rollout.stop=[]", []),
])
def test_list_overrides(override, expected):
    cfg = load_config(None, [override])
    section, key = override.split("=")[0].split(".")
    assert getattr(getattr(cfg, section), key) == expected


def test_bool_override():
    assert load_config(None, ["log.tensorboard=false"]).log.tensorboard is False


def test_override_without_equals_sign_is_an_error():
    message = config_error(None, ["train.max_steps"])
    assert "train.max_steps" in message and "section.key=value" in message


# ---------------------------------------------------------------- unknown keys


@pytest.mark.parametrize("bad, suggestion", [
    ("train.lrr", "train.lr"),
    ("train.lerning_rate", "train.lr"),
    ("train.learning_rate", "train.lr"),
    ("rollout.temprature", "rollout.temperature"),
    ("algo.kl_coeff", "algo.kl_coef"),
])
def test_unknown_key_in_recipe_names_key_file_and_nearest_valid_key(tmp_path, bad, suggestion):
    section, key = bad.split(".")
    recipe = write_recipe(tmp_path, f"{section}:\n  {key}: 1\n")
    message = config_error(recipe)
    assert f"unknown key {bad}" in message
    assert str(recipe) in message
    assert f"did you mean {suggestion}?" in message


def test_unknown_key_in_override_names_the_override():
    message = config_error(None, ["rollout.temprature=0.7"])
    assert "rollout.temprature" in message
    assert "override 'rollout.temprature=0.7'" in message
    assert "did you mean rollout.temperature?" in message


def test_unknown_section_suggests_the_nearest_section(tmp_path):
    recipe = write_recipe(tmp_path, "trainer:\n  lr: 1.0e-5\n")
    message = config_error(recipe)
    assert "unknown key trainer" in message and str(recipe) in message
    assert "did you mean train?" in message


def test_unknown_section_without_near_match_lists_the_sections(tmp_path):
    message = config_error(write_recipe(tmp_path, "zzzzzz: 1\n"))
    assert "unknown key zzzzzz" in message
    assert "valid keys here: model, data, rollout, train, algo, critic, reward, sync, dist, log, checkpoint" in message


# ---------------------------------------------------------------- wrong types


@pytest.mark.parametrize("section, key, value, expects", [
    ("train", "max_steps", "'ten'", "an integer"),       # string for int
    ("train", "max_steps", "2.5", "an integer"),         # float for int
    ("train", "max_steps", "2.0", "an integer"),         # a float even when whole: say 2, not 2.0
    ("train", "max_steps", "true", "an integer"),        # bool for int (bool is an int subclass in Python)
    ("model", "path", "[a, b]", "a string"),             # list for str
    ("model", "path", "null", "a string"),
    ("train", "lr", "fast", "a number"),                 # a string that is no float
    ("train", "lr", "true", "a number"),
    ("log", "tensorboard", "1", "true/false"),           # int for bool
    ("train", "betas", "0.9", "a list"),                 # a bare number for a list of floats
    ("train", "betas", "[0.9, fast]", "a number"),
])
def test_wrong_type_names_key_file_and_expected_type(tmp_path, section, key, value, expects):
    recipe = write_recipe(tmp_path, f"{section}:\n  {key}: {value}\n")
    message = config_error(recipe)
    assert f"{section}.{key}" in message
    assert str(recipe) in message
    assert f"expects {expects}" in message


def test_wrong_type_in_override_names_the_override():
    message = config_error(None, ["train.micro_batch_size=four"])
    assert "train.micro_batch_size in override 'train.micro_batch_size=four' expects an integer" in message


def test_literal_field_lists_allowed_values(tmp_path):
    recipe = write_recipe(tmp_path, "model:\n  dtype: fp16\n")
    message = config_error(recipe)
    assert "model.dtype" in message and str(recipe) in message
    assert "'bfloat16', 'float32'" in message and "'fp16'" in message
    assert load_config(None, ["model.dtype=float32"]).model.dtype == "float32"


def test_section_given_a_scalar_is_an_error(tmp_path):
    recipe = write_recipe(tmp_path, "train: 3\n")
    message = config_error(recipe)
    assert "train in" in message and str(recipe) in message
    assert "is a section" in message and "train.max_steps=" in message  # shows how to set a key under it
    assert "is a section" in config_error(None, ["rollout=4"])


def test_recipe_that_is_not_a_mapping_is_an_error(tmp_path):
    recipe = write_recipe(tmp_path, "- train\n- model\n")
    message = config_error(recipe)
    assert str(recipe) in message and "mapping of sections" in message


def test_invalid_yaml_is_a_config_error(tmp_path):
    recipe = write_recipe(tmp_path, "train: {max_steps: 3\n")
    assert f"{recipe} is not valid YAML" in config_error(recipe)


def test_missing_recipe_file_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert config_error(missing) == f"recipe file {missing} does not exist"


# ---------------------------------------------------------------- finalize


def finalized(*overrides: str, world_size: int = 1) -> Config:
    return load_config(None, [TRAIN_FILES, *overrides]).finalize(world_size)


def finalize_error(*overrides: str, world_size: int = 1) -> str:
    cfg = load_config(None, [TRAIN_FILES, *overrides])
    with pytest.raises(ConfigError) as info:
        cfg.finalize(world_size)
    return str(info.value)


def test_finalize_derives_per_rank_numbers():
    cfg = finalized("train.prompts_per_step=8", "rollout.n=8", "train.micro_batch_size=16", world_size=2)
    # 8 prompts over 2 ranks = 4 prompts per rank; x n=8 = 32 sequences per rank; 32 / 16 = 2 micro-batches.
    assert dataclasses.asdict(cfg.derived) == {"world_size": 2, "prompts_per_rank": 4, "samples_per_rank": 32,
                                               "micro_batches_per_update": 2, "optimizer_steps_per_step": 1}


def test_finalize_defaults_on_one_rank():
    cfg = finalized()
    # 64 prompts on 1 rank x n=8 = 512 sequences; 512 / micro 4 = 128 micro-batches.
    assert (cfg.derived.prompts_per_rank, cfg.derived.samples_per_rank, cfg.derived.micro_batches_per_update) == (64, 512, 128)


def test_finalize_returns_the_config_itself():
    cfg = load_config(None, [TRAIN_FILES])
    assert cfg.finalize(1) is cfg


def test_prompts_per_step_must_divide_over_ranks():
    message = finalize_error("train.prompts_per_step=6", world_size=4)
    # 6 / 4 ranks = 1.5 prompts each: a group cannot be split, so suggest a multiple of 4.
    assert message.startswith("train.prompts_per_step = 6 does not divide over 4 ranks")
    assert "multiple of 4" in message


def test_micro_batch_size_must_divide_sequences_per_rank():
    message = finalize_error("train.prompts_per_step=8", "rollout.n=8", "train.micro_batch_size=5", world_size=2)
    # 8 / 2 ranks x 8 = 32 sequences per rank; 32 % 5 = 2, so 5 cannot split them evenly.
    assert message.startswith("train.micro_batch_size = 5 does not divide the 32 sequences per rank")
    assert "use a divisor of 32" in message


def test_group_advantages_need_a_group_of_two():
    for advantage in ("grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"):
        message = finalize_error("rollout.n=1", f"algo.advantage={advantage}")
        assert message.startswith(f"rollout.n = 1: algo.advantage={advantage} compares") and "n >= 2" in message
    # REINFORCE++ whitens over the batch, not within a group: one sample per prompt is allowed
    cfg = load_config(None, ["rollout.n=1", "algo.advantage=reinforce_pp", "data.train_files=[x.parquet]",
                             "train.micro_batch_size=1"])
    assert cfg.finalize(1).derived.samples_per_rank == 64


def test_config_choices_are_the_registries_names():
    import typing

    from grpo.algorithms import ADVANTAGES, KL_ESTIMATORS, LOSS_AGGREGATIONS, POLICY_LOSSES
    from grpo.config import ADVANTAGE_GROUP_SIZES, AlgoConfig, RolloutConfig
    from grpo.rollout import ENGINES

    algo, rollout = typing.get_type_hints(AlgoConfig), typing.get_type_hints(RolloutConfig)
    for hint, registry in [(algo["advantage"], {**ADVANTAGES, "gae": None}), (algo["policy_loss"], POLICY_LOSSES),
                           (algo["loss_agg"], LOSS_AGGREGATIONS), (algo["kl_estimator"], KL_ESTIMATORS),
                           (rollout["engine"], ENGINES)]:
        assert set(typing.get_args(hint)) == set(registry)
    assert set(ADVANTAGE_GROUP_SIZES) == set(ADVANTAGES) | {"gae"}  # gae: per token, with the critic (algorithms/gae.py)


@pytest.mark.parametrize("override, nearest", [("algo.advantage=dr_gpro", "dr_grpo"), ("algo.policy_loss=gpso", "gspo"),
                                               ("algo.kl_estimator=kl3", "k3"), ("algo.loss_agg=token_means", "token_mean")])
def test_a_misspelt_choice_fails_in_load_config_with_the_nearest_name(override, nearest):
    with pytest.raises(ConfigError, match=f"did you mean '{nearest}'"):
        load_config(None, [override])


def test_empty_train_files_is_an_error():
    cfg = load_config()  # data.train_files defaults to []
    with pytest.raises(ConfigError, match=r"data\.train_files is empty: .*data\.train_files=\["):
        cfg.finalize(1)


@pytest.mark.parametrize("key", [
    "train.prompts_per_step", "rollout.n", "train.micro_batch_size", "train.max_steps",
    "rollout.max_new_tokens", "data.max_prompt_length", "rollout.batch_size", "sync.bucket_mb",
])
@pytest.mark.parametrize("value", [0, -1])
def test_counts_must_be_positive(key, value):
    assert finalize_error(f"{key}={value}").startswith(f"{key} must be at least 1, got {value}")


@pytest.mark.parametrize("override, key", [
    ("rollout.temperature=0", "rollout.temperature"),
    ("rollout.temperature=-0.5", "rollout.temperature"),
    ("rollout.top_p=0", "rollout.top_p"),
    ("rollout.top_p=1.5", "rollout.top_p"),
    ("rollout.top_k=-1", "rollout.top_k"),
    ("train.zero_stage=4", "train.zero_stage"),
    ("train.betas=[0.9]", "train.betas"),
    ("algo.kl_coef=-0.1", "algo.kl_coef"),
])
def test_out_of_range_values_name_the_key(override, key):
    assert finalize_error(override).startswith(f"{key} ")


def test_boundary_values_are_accepted():
    cfg = finalized("rollout.top_p=1", "rollout.top_k=0", "train.zero_stage=0", "algo.kl_coef=0")
    assert (cfg.rollout.top_p, cfg.rollout.top_k, cfg.train.zero_stage, cfg.algo.kl_coef) == (1.0, 0, 0, 0.0)


def test_world_size_zero_is_an_error():
    assert finalize_error(world_size=0).startswith("world_size must be at least 1, got 0")


def test_finalize_error_names_the_recipe_file(tmp_path):
    recipe = write_recipe(tmp_path, "data:\n  train_files: [x.parquet]\nrollout:\n  n: 1\n")
    with pytest.raises(ConfigError, match=f"in {recipe}"):
        load_config(recipe).finalize(1)


# ---------------------------------------------------------------- save()


def test_saved_config_reruns_as_a_recipe(tmp_path):
    recipe = write_recipe(tmp_path, "data:\n  train_files: [a.parquet]\ntrain:\n  prompts_per_step: 8\n"
                                    "  micro_batch_size: 16\n  lr: 1e-4\nrollout:\n  stop: ['</answer>']\n")
    cfg = load_config(recipe, ["algo.clip_high=0.28", "model.dtype=float32"]).finalize(2)
    saved_path = tmp_path / "run" / "config.yaml"  # save() creates the missing folder
    cfg.save(saved_path)

    saved = yaml.safe_load(saved_path.read_text())
    # The record holds the derived numbers (8 / 2 = 4 prompts, x 8 = 32 sequences, / 16 = 2
    # micro-batches) and where the config came from.
    assert saved["derived"] == {"world_size": 2, "prompts_per_rank": 4, "samples_per_rank": 32,
                                "micro_batches_per_update": 2, "optimizer_steps_per_step": 1}
    assert saved["source"] == str(recipe)

    # Loading the saved file as a recipe ignores the record-only entries: finalize recomputes them,
    # here for 4 ranks: 8 / 4 = 2 prompts, x 8 = 16 sequences, / 16 = 1 micro-batch.
    reloaded = load_config(saved_path)
    assert reloaded.source == str(saved_path) and reloaded.derived.world_size == 1  # not yet finalized
    reloaded.finalize(4)
    assert reloaded.derived.micro_batches_per_update == 1

    def recipe_part(c: Config) -> dict:
        d = c.to_dict()
        del d["source"], d["derived"]
        return d
    assert recipe_part(reloaded) == recipe_part(cfg)
    assert reloaded.train.lr == 1e-4 and reloaded.algo.clip_high == 0.28


def test_derived_cannot_be_overridden():
    message = config_error(None, ["derived.world_size=4"])
    assert message.startswith("derived in override") and "not a recipe key" in message


# ---------------------------------------------------------------- field docs


def test_every_field_of_every_section_has_a_doc():
    def keys(node, prefix):  # nested sections (model.lora) by their own keys
        return {key for f in dataclasses.fields(node)
                for key in (keys(getattr(node, f.name), f"{prefix}{f.name}.")
                            if dataclasses.is_dataclass(getattr(node, f.name)) else [f"{prefix}{f.name}"])}

    sections = [f for f in dataclasses.fields(Config) if f.name not in ("derived", "source")]
    expected = {key for s in sections for key in keys(s.default_factory(), f"{s.name}.")}
    docs = field_docs()
    assert set(docs) == expected
    assert len(expected) >= 40  # 9 sections: a sanity check that the walk found them all
    empty = [key for key, doc in docs.items() if not doc.strip()]
    assert empty == []


def test_field_doc_is_the_string_under_the_field():
    assert field_docs()["train.lr"] == "Peak learning rate of AdamW."


# ---------------------------------------------------------------- the CLI


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    return subprocess.run([sys.executable, "launch/run.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_unknown_override_exits_2_with_suggestion(tmp_path):
    recipe = write_recipe(tmp_path, "data:\n  train_files: [a.parquet]\n")
    result = run_cli(str(recipe), "train.lrr=1")
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown key train.lrr")
    assert "did you mean train.lr?" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_missing_recipe_exits_2(tmp_path):
    missing = tmp_path / "missing.yaml"
    result = run_cli(str(missing))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: recipe file {missing} does not exist"
    assert "Traceback" not in result.stderr


def test_cli_finalize_error_exits_2_before_training(tmp_path):
    recipe = write_recipe(tmp_path, "data:\n  train_files: [a.parquet]\n")
    result = run_cli(str(recipe), "train.micro_batch_size=5")
    # Defaults on 1 rank: 64 prompts x n=8 = 512 sequences; 512 % 5 = 2.
    assert result.returncode == 2
    assert "error: train.micro_batch_size = 5 does not divide the 512 sequences per rank" in result.stderr
    assert "Traceback" not in result.stderr
