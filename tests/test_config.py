"""The typed config: each error names the key, the expected and the received."""

import dataclasses
import os

import pytest
import yaml

from lossaudit.config import AuditConfig, apply_override, load_config, load_yaml
from lossaudit.errors import ConfigError
from lossaudit.pipelines import audit

BASE = {"input": {"pattern": "data/*.tfrecord"}, "model": {"path": "m.keras"}}


def _config(**changes):
  raw = yaml.safe_load(yaml.safe_dump(BASE))
  for dotted, value in changes.items():
    apply_override(raw, f"{dotted.replace('__', '.')}={yaml.safe_dump(value)}")
  return AuditConfig.from_dict(raw)


def test_defaults_follow_the_contract():
  config = _config()
  assert config.loss.name == "sparse_categorical_crossentropy"
  assert config.loss.reduce == "mean"
  assert config.batch_size == 1024
  assert config.stats.epsilon == 0.001
  assert config.stats.quantiles[-1] == 0.999
  assert config.stats.max_slices == 1000
  assert config.flag.loss_quantile == 0.99
  assert config.output.num_shards == 0
  assert config.input.patterns == ("data/*.tfrecord",)
  assert config.to_dict()["input"]["pattern"] == "data/*.tfrecord"


def test_list_of_patterns():
  config = _config(input__pattern=["a/*.gz", "b/*.gz"])
  assert config.input.patterns == ("a/*.gz", "b/*.gz")


@pytest.mark.parametrize("changes, message", [
    ({"input__format": "csv"},
     r"input.format: expected one of \{'tfrecord', 'parquet'\}. Received:"
     r" 'csv'"),
    ({"input__pattern": ""},
     r"input.pattern: expected a non-empty glob or list of globs."
     r" Received: ''"),
    ({"input__feature_columns": 3},
     r"input.feature_columns: expected null, a list of column names or a"
     r" mapping model input -> column. Received: 3"),
    ({"batch_size": 0},
     r"batch_size: expected an integer in \[1, 1048576\]. Received: 0"),
    ({"batch_size": True},
     r"batch_size: expected an integer in \[1, 1048576\]. Received: True"),
    ({"loss__reduce": "avg"},
     r"loss.reduce: expected one of \{'mean', 'sum'\}. Received: 'avg'"),
    ({"loss__name": "sparse_categorical_crosentropy"},
     r"loss.name: expected one of \[.*\]. Received:"
     r" 'sparse_categorical_crosentropy'. Did you mean"
     r" 'sparse_categorical_crossentropy'\?"),
    ({"loss__from_logits": "yes"},
     r"loss.from_logits: expected true or false. Received: 'yes'"),
    ({"loss__custom": "no_colon"},
     r"loss.custom: expected 'package.module:function'. Received: 'no_colon'"),
    ({"stats__epsilon": 0},
     r"stats.epsilon: expected a number in \[1e-06, 0.5\]. Received: 0"),
    ({"stats__quantiles": [0.5, 1.5]},
     r"stats.quantiles: expected a non-empty list of numbers in \[0, 1\]"),
    ({"stats__max_slices": 0},
     r"^stats.max_slices: expected a positive integer. Received: 0$"),
    ({"stats__max_slices": -5},
     r"^stats.max_slices: expected a positive integer. Received: -5$"),
    ({"stats__max_slices": 2.5},
     r"^stats.max_slices: expected a positive integer. Received: 2.5$"),
    ({"stats__max_slices": True},
     r"^stats.max_slices: expected a positive integer. Received: True$"),
    ({"stats__max_slices": "1000"},
     r"^stats.max_slices: expected a positive integer. Received: '1000'$"),
    ({"stats__max_slices": None},
     r"^stats.max_slices: expected a positive integer. Received: None$"),
    ({"flag__loss_quantile": 2},
     r"flag.loss_quantile: expected a number in \[0, 1\]. Received: 2"),
    ({"flag__top_k": 0},
     r"flag.top_k: expected a positive integer. Received: 0"),
    ({"flag__label_issues": "magic"},
     r"flag.label_issues: expected null or one of \{'confident_learning',"
     r" 'prune_by_noise_rate', 'early_aum'\}. Received: 'magic'"),
    ({"runtime__device": "tpu"},
     r"runtime.device: expected one of \{'auto', 'cpu', 'gpu'\}. Received:"
     r" 'tpu'"),
    ({"output__num_shards": -1},
     r"output.num_shards: expected an integer in \[0, 10000\]. Received: -1"),
    ({"gate__max_flagged_fraction": 1.5},
     r"gate.max_flagged_fraction: expected a number in \[0, 1\]."
     r" Received: 1.5"),
])
def test_invalid_values_name_key_expected_and_received(changes, message):
  with pytest.raises(ConfigError, match=message):
    _config(**changes)


def test_choices_are_listed_in_their_declared_order():
  # A set's order changes from run to run (string hashes are salted).
  from lossaudit import config as config_module
  from lossaudit.rules import label_issue

  for choices in (config_module.FORMATS, config_module.REDUCTIONS,
                  label_issue.LABEL_ISSUE_METHODS, config_module.DEVICES):
    rule = config_module._one_of(choices)
    assert rule.expected == "one of {" + ", ".join(map(repr, choices)) + "}"


def test_unknown_keys_suggest_the_nearest():
  with pytest.raises(ConfigError, match=r"flag.los_quantile: unknown config"
                     r" key; expected one of \[.*\]. Did you mean"
                     r" flag.loss_quantile\?"):
    _config(flag__los_quantile=0.9)
  with pytest.raises(ConfigError, match=r"^inputs: unknown config key;.*Did"
                     r" you mean input\?"):
    AuditConfig.from_dict({**BASE, "inputs": {}})


def test_missing_sections():
  with pytest.raises(ConfigError,
                     match=r"model: expected a mapping. Received: None"):
    AuditConfig.from_dict({"input": {"pattern": "x"}})
  with pytest.raises(ConfigError,
                     match=r"output: expected a mapping. Received: 3"):
    AuditConfig.from_dict({**BASE, "output": 3})


def test_set_overrides_parse_yaml_values():
  raw = {"flag": {"loss_quantile": 0.99}}
  apply_override(raw, "flag.loss_quantile=null")
  apply_override(raw, "flag.top_k=10")
  apply_override(raw, "input.pattern=gs://b/x/*.tfrecord")
  assert raw == {"flag": {"loss_quantile": None, "top_k": 10},
                 "input": {"pattern": "gs://b/x/*.tfrecord"}}
  with pytest.raises(ConfigError, match=r"--set: expected KEY=VALUE."
                     r" Received: 'flag.top_k'"):
    apply_override(raw, "flag.top_k")
  with pytest.raises(ConfigError, match=r"--set flag.top_k.x: 'top_k' is not a"
                     r" mapping. Received: 10"):
    apply_override(raw, "flag.top_k.x=1")
  with pytest.raises(ConfigError, match=r"--set: expected a dotted key."
                     r" Received: 'a..b'"):
    apply_override(raw, "a..b=1")
  with pytest.raises(ConfigError, match=r"--set x: expected a YAML value"):
    apply_override(raw, "x=[1")


def test_load_config_files(tmp_path):
  path = tmp_path / "c.yaml"
  path.write_text(yaml.safe_dump(BASE))
  config = load_config(str(path), ["batch_size=64"])
  assert config.batch_size == 64
  with pytest.raises(ConfigError, match=r"--config: expected a YAML file."
                     r" Received: '/nope.yaml' \(no such file\)"):
    load_config("/nope.yaml")
  path.write_text("input: [unclosed")
  with pytest.raises(ConfigError, match=r"--config .*: expected valid YAML"):
    load_config(str(path))
  path.write_text("- a\n- b\n")
  with pytest.raises(ConfigError, match=r"expected a YAML mapping. Received:"
                     r" \['a', 'b'\]"):
    load_config(str(path))
  path.write_text("!!python/object/apply:os.system ['echo hacked']")
  with pytest.raises(ConfigError, match=r"expected valid YAML"):
    load_config(str(path))


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
  path = tmp_path / "c.yaml"
  path.write_text(yaml.safe_dump({**BASE, "flag": {"top_k": -3}}))
  assert audit.main(["--config", str(path)]) == 2
  err = capsys.readouterr().err
  assert err == ("lossaudit: error: flag.top_k: expected a positive integer."
                 " Received: -3\n")


def _error(raw) -> str:
  with pytest.raises(ConfigError) as info:
    AuditConfig.from_dict(raw)
  return str(info.value)


def _with(section, **values):
  return {**BASE, section: {**BASE.get(section, {}), **values}}


@pytest.mark.parametrize("raw, message", [
    ({**BASE, "batch_size": 99999999999999999999},
     "batch_size: expected an integer in [1, 1048576]."
     " Received: 99999999999999999999"),
    ({**BASE, "batch_size": 1048577},
     "batch_size: expected an integer in [1, 1048576]. Received: 1048577"),
    ({**BASE, "batch_size": 64.0},
     "batch_size: expected an integer in [1, 1048576]. Received: 64.0"),
    (_with("stats", epsilon=1e-300),
     "stats.epsilon: expected a number in [1e-06, 0.5]. Received: 1e-300"),
    (_with("stats", epsilon=9e-7),
     "stats.epsilon: expected a number in [1e-06, 0.5]. Received: 9e-07"),
    (_with("stats", epsilon=0.6),
     "stats.epsilon: expected a number in [1e-06, 0.5]. Received: 0.6"),
    (_with("stats", epsilon=float("nan")),
     "stats.epsilon: expected a number in [1e-06, 0.5]. Received: nan"),
    (_with("output", num_shards=1000000000),
     "output.num_shards: expected an integer in [0, 10000]."
     " Received: 1000000000"),
    (_with("output", num_shards=10001),
     "output.num_shards: expected an integer in [0, 10000]. Received: 10001"),
])
def test_bounds(raw, message):
  assert _error(raw) == message


def test_bounds_accept_their_limits():
  config = AuditConfig.from_dict({
      **BASE, "batch_size": 1048576, "stats": {"epsilon": 1e-6},
      "output": {"num_shards": 10000}})
  assert (config.batch_size, config.stats.epsilon,
          config.output.num_shards) == (1048576, 1e-6, 10000)
  assert AuditConfig.from_dict({**BASE, "batch_size": 1,
                                "stats": {"epsilon": 0.5}}).batch_size == 1


def test_a_huge_integer_is_refused_not_overflowed():
  message = _error(_with("stats", epsilon=10**400))
  assert message.startswith("stats.epsilon: expected a number in [1e-06, 0.5]."
                            " Received: 1000")
  assert len(message) < 200


@pytest.mark.parametrize("directory", [
    "out/{date.year}", "out/{date.__class__.__mro__}", "out/{date!r}",
    "out/{date:%Y}", "out/{0}", "out/{}", "out/{day}", "out/{run_id[0]}",
    "out/{date", "out/date}", "out/{{date}}", "gs://b/{run_id!s}",
])
def test_output_dir_placeholders_are_exactly_date_and_run_id(directory):
  assert _error(_with("output", dir=directory)) == (
      "output.dir: expected a path whose only placeholders are {date} and"
      f" {{run_id}}. Received: {directory!r}")


@pytest.mark.parametrize("directory", [
    "out/audit", "out/{date}", "gs://bucket/nightly/{date}/{run_id}",
    "out/{run_id}-{date}"])
def test_output_dir_valid_placeholders(directory):
  assert AuditConfig.from_dict(_with("output", dir=directory)).output.dir == (
      directory)


@pytest.mark.parametrize("raw, message", [
    (_with("output", dir="foo://x"),
     "output.dir: expected a local path or gs:// URI. Received: 'foo://x'"),
    (_with("output", dir="s3://bucket/out"),
     "output.dir: expected a local path or gs:// URI."
     " Received: 's3://bucket/out'"),
    (_with("output", dir="gs://"),
     "output.dir: expected a local path or gs:// URI. Received: 'gs://'"),
    (_with("input", pattern="hdfs://data/*.tfrecord"),
     "input.pattern: expected a local path or gs:// URI."
     " Received: 'hdfs://data/*.tfrecord'"),
    (_with("input", pattern=["gs://b/a/*", "GS://b/x/*"]),
     "input.pattern: expected a local path or gs:// URI. Received: 'GS://b/x/*'"),
    (_with("model", path="http://example.com/m.keras"),
     "model.path: expected a local path or gs:// URI."
     " Received: 'http://example.com/m.keras'"),
    (_with("gate", baseline="file:///runs/last"),
     "gate.baseline: expected a local path or gs:// URI."
     " Received: 'file:///runs/last'"),
])
def test_unknown_url_schemes_are_refused(raw, message):
  assert _error(raw) == message


def test_local_paths_gs_uris_and_latest_are_accepted():
  config = AuditConfig.from_dict({
      "input": {"pattern": ["gs://b/x/*.gz", "data/part-*.gz"]},
      "model": {"path": "gs://b/models/m.keras"},
      "output": {"dir": "/tmp/out"}, "gate": {"baseline": "latest"}})
  assert config.gate.baseline == "latest"
  assert AuditConfig.from_dict(_with("gate", baseline="gs://b/runs/1")).gate


def test_config_path_scheme_is_checked(tmp_path):
  with pytest.raises(ConfigError) as info:
    load_config("foo://bucket/config.yaml")
  assert str(info.value) == ("--config: expected a local path or gs:// URI."
                             " Received: 'foo://bucket/config.yaml'")


def test_output_overwrite_and_lock_timeout_defaults():
  output = AuditConfig.from_dict(BASE).output
  assert output.overwrite is False
  assert output.lock_timeout == "6h"
  assert output.lock_timeout_seconds == 6 * 3600.0
  assert AuditConfig.from_dict(_with("output", overwrite=True)).output.overwrite


@pytest.mark.parametrize("value, seconds", [
    ("90s", 90.0), ("30m", 1800.0), ("6h", 21600.0), ("2d", 172800.0),
    ("1.5h", 5400.0), (" 45 ", 45.0), (45, 45.0), (0.5, 0.5),
    ("365d", 31536000.0)])
def test_lock_timeout_durations(value, seconds):
  output = AuditConfig.from_dict(_with("output", lock_timeout=value)).output
  assert output.lock_timeout_seconds == seconds
  assert isinstance(output.lock_timeout_seconds, float)


@pytest.mark.parametrize("value", [
    0, -5, "0s", "6 hours", "6hh", "h", "-1h", "1w", "366d", True, None,
    float("inf"), float("nan"), [6]])
def test_lock_timeout_is_a_positive_duration(value):
  assert _error(_with("output", lock_timeout=value)) == (
      "output.lock_timeout: expected a duration of at most 365d: a positive"
      " number of seconds, or a string such as '90s', '30m', '6h' or '2d'."
      f" Received: {value!r}")


def test_output_overwrite_is_a_bool():
  assert _error(_with("output", overwrite="yes")) == (
      "output.overwrite: expected true or false. Received: 'yes'")


@pytest.mark.parametrize("custom", [
    ".relative:loss", "module:", ":loss", "module:loss:extra", "a b:loss",
    "module.:loss"])
def test_custom_loss_path_format(custom):
  assert _error(_with("loss", custom=custom)) == (
      f"loss.custom: expected 'package.module:function'. Received: {custom!r}")
  outputs = [{"output": "o", "label_column": "y", "custom": custom}]
  assert _error(_with("loss", outputs=outputs)) == (
      "loss.outputs[0].custom: expected 'package.module:function'. Received:"
      f" {custom!r}")


def test_huge_received_values_give_short_messages():
  message = _error(_with("input", format="y" * 1_000_000))
  assert message.startswith("input.format: expected one of")
  assert "..." in message and len(message) < 300
  message = _error(_with("input", feature_columns=list(range(100_000))))
  assert message.endswith("Received: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...]")
  message = _error({**BASE, "k" * 100_000: 1})
  assert message.startswith("k" * 79 + "…: unknown config key")
  assert len(message) < 300


def test_one_line():
  from lossaudit.errors import one_line

  assert one_line("a\n  b\t\tc\r\n") == "a b c"
  assert one_line("x" * 300) == "x" * 300
  assert one_line("x" * 301) == "x" * 299 + "…"
  assert one_line("word " * 10, limit=12) == "word word w…"
  assert len(one_line("y\n" * 100_000)) == 300


def test_describe_error():
  from lossaudit.errors import describe_error

  assert describe_error(RuntimeError("first\nsecond")) == "RuntimeError: first"
  assert describe_error(SystemExit(3)) == "SystemExit: 3"
  assert describe_error(SystemExit()) == "SystemExit"
  try:  # As TensorFlow's AutoGraph re-raises an error from user code.
    try:
      raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
      raise ValueError("in user code:\n\n  File x.py\n\n  ZeroDivisionError")
  except ValueError as e:
    assert describe_error(e) == "ZeroDivisionError: division by zero"


def _billion_laughs(levels=9):
  lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
  for i in range(1, levels):
    lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
  return "\n".join(lines) + "\n"


ALIASES = ("expected YAML without recursive or heavily nested aliases (at most"
           " 100 alias references, adding at most 100000 values once"
           " expanded). Received: ")
# _billion_laughs(): a0 is 9 values (list + 8 scalars), a(i) = 1 + 9 a(i-1),
# so a0..a8 expand to 441,901,493 values; with the root and its 9 keys,
# 441,901,503 in all, of which 27 are distinct nodes: aliases add 441,901,476.
BOMB_ADDS = "aliases that add 441901476 values once expanded"


@pytest.mark.parametrize("text, received", [
    (_billion_laughs(), BOMB_ADDS),
    # a0..a5: 606,173 values, + root and 6 keys, - 21 distinct nodes.
    (_billion_laughs(6), "aliases that add 606159 values once expanded"),
    ("input: &i {pattern: *i}\n",
     "a recursive alias (an anchor used inside itself)"),
    ("a: &x 1\nb: [" + ", ".join(["*x"] * 101) + "]\n",
     "more than 100 alias references"),
])
def test_alias_bombs_are_refused(tmp_path, text, received):
  path = tmp_path / "bomb.yaml"
  path.write_text(text)
  with pytest.raises(ConfigError) as info:
    load_config(str(path))
  assert str(info.value) == f"--config {path}: {ALIASES}{received}"


def test_alias_bomb_in_set_is_refused():
  with pytest.raises(ConfigError) as info:
    apply_override({}, "input.pattern=" + _billion_laughs().replace(
        "\n", ", ").join("{}"))
  assert str(info.value) == (
      "--set input.pattern: expected a YAML value without recursive or"
      " heavily nested aliases (at most 100 alias references, adding at most"
      " 100000 values once expanded). Received: " + BOMB_ADDS)


def test_deep_nesting_is_refused(tmp_path):
  path = tmp_path / "deep.yaml"
  path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
  with pytest.raises(ConfigError) as info:
    load_config(str(path))
  assert str(info.value) == (
      f"--config {path}: expected YAML nested less deeply. Received: nesting"
      " deeper than Python's recursion limit")


def test_long_documents_and_a_few_aliases_are_fine(tmp_path):
  # More than MAX_YAML_VALUES values, but the one alias adds just one.
  long = load_yaml("q: [&h 0.5, " + ", ".join(["0.5"] * 100_001) + ", *h]")
  assert len(long["q"]) == 100_003
  path = tmp_path / "c.yaml"
  path.write_text("input: {pattern: &p data/*.tfrecord}\nmodel: {path: m}\n"
                  "gate: {baseline: *p}\nstats: &s {epsilon: 0.01}\n")
  config = load_config(str(path))
  assert config.gate.baseline == "data/*.tfrecord"
  assert config.stats.epsilon == 0.01


@pytest.mark.parametrize("text, message", [
    (_billion_laughs(), BOMB_ADDS),
    (yaml.safe_dump({**BASE, "output": {"dir": "foo://x"}}),
     "output.dir: expected a local path or gs:// URI. Received: 'foo://x'"),
    (yaml.safe_dump({**BASE, "output": {"dir": "out/{date.year}"}}),
     "output.dir: expected a path whose only placeholders are {date} and"
     " {run_id}. Received: 'out/{date.year}'"),
])
def test_cli_bad_configs_exit_2_on_one_short_line(tmp_path, capsys, text,
                                                  message):
  path = tmp_path / "c.yaml"
  path.write_text(text)
  assert audit.main(["--config", str(path)]) == 2
  err = capsys.readouterr().err
  assert err.startswith("lossaudit: error: ") and err.endswith(message + "\n")
  assert err.count("\n") == 1 and len(err) < 400
  assert "Traceback" not in err


@pytest.mark.parametrize("text, message", [
    ("input: {pattern: a}\nbatch_size: 8\nmodel: {path: m}\nbatch_size: 9\n",
     "--config {path}: expected each key once. Received: duplicate key"
     " 'batch_size' (line 4, first on line 2)"),
    ("input: {pattern: a}\nmodel: {path: m}\nflag:\n  top_k: 1\n"
     "  loss_quantile: 0.5\n  top_k: 2\n",
     "flag: expected each key once. Received: duplicate key 'top_k' (line 6,"
     " first on line 4)"),
    ("input: {pattern: a, pattern: b}\nmodel: {path: m}\n",
     "input: expected each key once. Received: duplicate key 'pattern' (line"
     " 1, first on line 1)"),
    ("input: {pattern: a}\nmodel: {path: m}\nloss:\n  outputs:\n"
     "  - {output: a, label_column: y, output: b}\n",
     "loss.outputs[0]: expected each key once. Received: duplicate key"
     " 'output' (line 5, first on line 5)"),
    # Keys are compared as loaded: 1 and 0x1 are one key.
    ("input: {pattern: a}\nmodel: {path: m}\nloss:\n  args: {1: a, 0x1: b}\n",
     "loss.args: expected each key once. Received: duplicate key 1 (line 4,"
     " first on line 4)"),
])
def test_duplicate_keys_are_refused(tmp_path, capsys, text, message):
  path = tmp_path / "c.yaml"
  path.write_text(text)
  message = message.format(path=path)
  with pytest.raises(ConfigError) as info:
    load_config(str(path))
  assert str(info.value) == message
  assert audit.main(["--config", str(path)]) == 2
  assert capsys.readouterr().err == f"lossaudit: error: {message}\n"


def test_duplicate_keys_in_set_are_refused():
  with pytest.raises(ConfigError) as info:
    apply_override({}, "flag={top_k: 1, top_k: 2}")
  assert str(info.value) == (
      "--set flag: expected each key once. Received: duplicate key 'top_k'")
  with pytest.raises(ConfigError) as info:
    apply_override({}, "loss={args: {a: 1, a: 2}}")
  assert str(info.value) == (
      "--set loss.args: expected each key once. Received: duplicate key 'a'")


def test_merge_keys_may_still_be_overridden():
  loaded = load_yaml("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n")
  assert loaded["c"] == {"x": 3, "y": 2}
  # A key repeated in different mappings, or an alias used twice, is fine.
  assert load_yaml("a: {k: 1}\nb: {k: 2}\nc: &s {k: 3}\nd: [*s, *s]\n") == {
      "a": {"k": 1}, "b": {"k": 2}, "c": {"k": 3}, "d": [{"k": 3}] * 2}


@pytest.mark.parametrize("text, value", [
    ("1e-3", 0.001), ("1E3", 1000.0), ("-2e+5", -200000.0), (".5", 0.5),
    ("1.", 1.0), ("-.5", -0.5), ("1.0e3", 1000.0), ("1.5E-2", 0.015),
])
def test_yaml_12_floats_are_numbers(text, value):
  loaded = load_yaml(text)
  assert type(loaded) is float and loaded == value  # pylint: disable=unidiomatic-typecheck


@pytest.mark.parametrize("text, value", [
    ("1e-3x", "1e-3x"), ("e3", "e3"), ("1e", "1e"), ("1e3.5", "1e3.5"),
    ("089", "089"), ("10", 10), ("-7", -7), ("0x1F", 31), ("1_000", 1000),
    ("'1e-3'", "1e-3"),
])
def test_yaml_12_floats_leave_ints_and_strings_alone(text, value):
  loaded = load_yaml(text)
  assert type(loaded) is type(value) and loaded == value  # pylint: disable=unidiomatic-typecheck


def test_yaml_12_floats_only_in_the_config_loader():
  assert yaml.safe_load("1e-3") == "1e-3"


def test_yaml_12_floats_in_config_files_and_set(tmp_path):
  path = tmp_path / "c.yaml"
  path.write_text(yaml.safe_dump(BASE) +
                  "stats: {epsilon: 1e-3}\nflag: {loss_threshold: 1e3}\n")
  config = load_config(str(path), ["gate.max_quantile_shift=5e-1"])
  assert config.stats.epsilon == 0.001
  assert config.flag.loss_threshold == 1000.0
  assert config.gate.max_quantile_shift == 0.5
  raw = {}
  apply_override(raw, "flag.loss_threshold=-2e+5")
  apply_override(raw, "input.pattern=1e-3x")
  apply_override(raw, "batch_size=64")
  assert raw == {"flag": {"loss_threshold": -200000.0},
                 "input": {"pattern": "1e-3x"}, "batch_size": 64}
  # Still checked as numbers: 1e-9 is below the smallest epsilon.
  with pytest.raises(ConfigError) as info:
    load_config(str(path), ["stats.epsilon=1e-9"])
  assert str(info.value) == (
      "stats.epsilon: expected a number in [1e-06, 0.5]. Received: 1e-09")


def test_config_from_a_pipe(tmp_path):
  # `--config <(cat c.yaml)` passes /dev/fd/N, a pipe, not a regular file.
  read, write = os.pipe()
  try:
    os.write(write, yaml.safe_dump(BASE).encode("utf-8"))
    os.close(write)
    config = load_config(f"/dev/fd/{read}", ["batch_size=8"])
  finally:
    os.close(read)
  assert config.batch_size == 8
  assert config.input.pattern == "data/*.tfrecord"


def test_config_that_is_a_directory(tmp_path, capsys):
  with pytest.raises(ConfigError) as info:
    load_config(str(tmp_path))
  assert str(info.value) == (
      f"--config: expected a YAML file. Received: '{tmp_path}' (a directory)")
  assert audit.main(["--config", str(tmp_path)]) == 2
  assert capsys.readouterr().err == (
      f"lossaudit: error: --config: expected a YAML file. Received:"
      f" '{tmp_path}' (a directory)\n")


def test_every_key_is_checked_by_its_field_rule():
  # `loss.outputs` is parsed by LossConfig itself; `index` is not a key.
  explicit = {("LossConfig", "outputs"), ("LossOutputConfig", "index"),
              ("OutputConfig", "clean"), ("OutputConfig", "weights")}
  from lossaudit import config as config_module

  sections = [*config_module._SECTIONS.values(),
              config_module.LossOutputConfig]
  for section in sections:
    for field in dataclasses.fields(section):
      rule = field.metadata.get(config_module.RULE)
      if (section.__name__, field.name) in explicit:
        assert rule is None
      else:
        assert isinstance(rule, config_module.Rule), (section, field.name)
  robust_z = {f.name: f for f in dataclasses.fields(config_module.FlagConfig)
              }["robust_z"]
  rule = robust_z.metadata[config_module.RULE]
  assert rule.apply("flag.robust_z", None) is None
  with pytest.raises(ConfigError) as info:
    rule.apply("flag.robust_z", 0)
  assert str(info.value) == (
      "flag.robust_z: expected a number in (0, inf]. Received: 0")


@pytest.mark.parametrize("name", ["demo", "nightly", "dataflow_gpu", "text",
                                  "images"])
def test_shipped_configs_load(name):
  from lossaudit import configs  # pylint: disable=g-import-not-at-top

  path = os.path.join(os.path.dirname(configs.__file__), f"{name}.yaml")
  assert load_config(path).model.path


def _model(**values):
  return {**BASE, "model": values}


@pytest.mark.parametrize("raw, message", [
    (_model(path="m.keras", folds=5),
     "model.path: expected a path holding {fold}, filled in from"
     " model.folds. Received: 'm.keras'"),
    (_model(path="m{fold}.keras"),
     "model.folds: expected a value to fill {fold} in model.path"
     " 'm{fold}.keras'. Received: None"),
    (_model(path="e{checkpoint}.keras"),
     "model.checkpoints: expected a value to fill {checkpoint} in model.path"
     " 'e{checkpoint}.keras'. Received: None"),
    (_model(path="e.keras", checkpoints=[1, 2]),
     "model.path: expected a path holding {checkpoint}, filled in from"
     " model.checkpoints. Received: 'e.keras'"),
    (_model(path="m{fold}.keras", folds=1),
     "model.folds: expected null or an integer in [2, 1000]. Received: 1"),
    (_model(path="m{epoch}.keras"),
     "model.path: expected a path whose only placeholders are {fold} and"
     " {checkpoint}. Received: 'm{epoch}.keras'"),
    (_model(path="m{fold!r}.keras", folds=2),
     "model.path: expected a path whose only placeholders are {fold} and"
     " {checkpoint}. Received: 'm{fold!r}.keras'"),
    (_model(path="e{checkpoint}", checkpoints=[3]),
     "model.checkpoints: expected null or a list of 2 to 1000 distinct"
     " checkpoint names (strings or integers) filling {checkpoint}."
     " Received: [3]"),
    (_model(path="e{checkpoint}", checkpoints=[3, "3"]),
     "model.checkpoints: expected null or a list of 2 to 1000 distinct"
     " checkpoint names (strings or integers) filling {checkpoint}."
     " Received: [3, '3']"),
    (_model(path="m.keras", predictions_column="p"),
     "model.predictions_column: expected model.path to be empty (the"
     " predictions are read, no model runs). Received:"
     " predictions_column='p' with model.path='m.keras'"),
    (_model(),
     "model.path: expected a .keras file or a SavedModel directory, or"
     " model.predictions_column set. Received: ''"),
    (_model(predictions_column="p", predictions_kind="softmax"),
     "model.predictions_kind: expected one of {'probabilities', 'logits'}."
     " Received: 'softmax'"),
    ({**_with("input", fold_column="f")},
     "input.fold_column: needs model.folds to be set. Received:"
     " input.fold_column='f' with model.folds=None"),
    ({**_with("input", id_column=None), "model": {"path": "m{fold}",
                                                  "folds": 3}},
     "model.folds: needs input.fold_column or input.id_column (the fold of an"
     " example is fold_of(its id)). Received: both null"),
    (_with("flag", aum_below=0.0),
     "flag.aum_below: needs model.checkpoints (AUM is a mean over"
     " checkpoints). Received: flag.aum_below=0.0 with"
     " model.checkpoints=None"),
    (_with("flag", aum_quantile=2),
     "flag.aum_quantile: expected a number in [0, 1]. Received: 2"),
    (_model(path="m{fold}/{checkpoint}", folds=100,
            checkpoints=list(range(11))),
     "model.checkpoints: expected at most 1000 models in all (model.folds ×"
     " model.checkpoints), each loaded by every worker. Received: 100 folds"
     " × 11 checkpoints = 1100"),
    (_model(path="m", predictions_kind="logits"),
     "model.predictions_kind: needs model.predictions_column (a model's"
     " outputs are described by loss.from_logits). Received: 'logits' with"
     " model.path='m'"),
    (_model(predictions_column="p", folds=2),
     "model.folds: needs model.path (a predictions column is already"
     " out-of-sample or one set of predictions). Received:"
     " model.predictions_column='p'"),
    ({**_model(predictions_column="p"),
      "input": {"pattern": "x", "feature_columns": ["q"]}},
     "input.feature_columns: expected null with model.predictions_column"
     " and no model.dynamics_path (the column is the only input). Received:"
     " ('q',)"),
    ({**_model(predictions_column="p"), "loss": {"from_logits": True}},
     "loss.from_logits: expected false with model.predictions_kind"
     " 'probabilities' (set predictions_kind: logits for logits). Received:"
     " true with model.predictions_column='p'"),
    (_with("dynamics", ambiguous_variability=0.7),
     "dynamics.ambiguous_variability: expected a number in [0, 0.5]."
     " Received: 0.7"),
])
def test_several_models_errors(raw, message):
  assert _error(raw) == message


def test_fold_and_checkpoint_paths():
  config = AuditConfig.from_dict(_model(
      path="gs://b/f{fold}/e{checkpoint}-{fold}.keras", folds=2,
      checkpoints=[5, "last"]))
  assert config.model.paths(1) == ("gs://b/f1/e5-1.keras",
                                   "gs://b/f1/elast-1.keras")
  assert config.model.checkpoints == ("5", "last")


# --- A config from a pipe: read once -------------------------------------


def _config_to_a_missing_input(tmp_path):
  """A config that loads, and stops the run at its input glob: what it
  says proves the pipe's content was read."""
  return yaml.safe_dump({
      "input": {"pattern": str(tmp_path / "none" / "*.gz"),
                "format": "tfrecord", "id_column": "id",
                "label_column": "label"},
      "model": {"path": str(tmp_path / "model")},
      "loss": {"name": "sparse_categorical_crossentropy"},
      "output": {"dir": str(tmp_path / "out")}})


def test_run_reads_a_config_from_a_pipe_once(tmp_path, capsys):
  import threading  # pylint: disable=g-import-not-at-top

  from lossaudit.pipelines import cli  # pylint: disable=g-import-not-at-top

  text = _config_to_a_missing_input(tmp_path).encode("utf-8")
  read_end, write_end = os.pipe()

  def feed():
    with os.fdopen(write_end, "wb") as f:
      f.write(text)

  writer = threading.Thread(target=feed)
  writer.start()
  try:
    code = cli.main(["run", "--config", f"/dev/fd/{read_end}"])
  finally:
    writer.join()
    os.close(read_end)
  assert (code, capsys.readouterr().err) == (
      2, "lossaudit: error: input.pattern: no file matches"
         f" {str(tmp_path / 'none' / '*.gz')!r}\n")
  assert not (tmp_path / "out").exists()


def test_run_reads_a_config_from_dev_stdin(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run(
      [sys.executable, "-m", "lossaudit", "run", "--config", "/dev/stdin"],
      input=_config_to_a_missing_input(tmp_path).encode("utf-8"),
      capture_output=True, cwd=tmp_path, timeout=120,
      env=dict(os.environ, PYTHONPATH=repo), check=False)
  assert (done.returncode, done.stderr.decode()) == (
      2, "lossaudit: error: input.pattern: no file matches"
         f" {str(tmp_path / 'none' / '*.gz')!r}\n")


# --- Keys that have no effect in the chosen mode ------------------------------

_ONE_OUTPUT = [{"output": "o", "label_column": "y"}]
_PER_OUTPUT = "with loss.outputs (each of loss.outputs sets its own"
_CUSTOM_LOGITS = ("a custom loss gets the model's outputs as they are; give"
                  " it arguments in args")


def _outputs(**loss):
  return {**BASE, "loss": {"outputs": _ONE_OUTPUT, **loss}}


@pytest.mark.parametrize("raw, message", [
    (_with("dynamics", easy_confidence=0.6),
     "dynamics.easy_confidence: has no effect without model.checkpoints (the"
     " data map of training dynamics needs them). Received: 0.6"),
    (_with("dynamics", ambiguous_variability=0.3),
     "dynamics.ambiguous_variability: has no effect without"
     " model.checkpoints (the data map of training dynamics needs them)."
     " Received: 0.3"),
    ({**_outputs(), "input": {"pattern": "x", "label_column": "label"}},
     f"input.label_column: has no effect {_PER_OUTPUT} label_column)."
     " Received: 'label'"),
    ({**_outputs(), "model": {"path": "m.keras", "output": "o"}},
     f"model.output: has no effect {_PER_OUTPUT} output). Received: 'o'"),
    (_outputs(name="mse"),
     f"loss.name: has no effect {_PER_OUTPUT} name). Received: 'mse'"),
    (_outputs(from_logits=False),
     f"loss.from_logits: has no effect {_PER_OUTPUT} from_logits)."
     " Received: False"),
    (_outputs(reduce="sum"),
     f"loss.reduce: has no effect {_PER_OUTPUT} reduce). Received: 'sum'"),
    (_outputs(args={"delta": 2.0}),
     f"loss.args: has no effect {_PER_OUTPUT} args). Received:"
     " {'delta': 2.0}"),
    (_outputs(custom="my.losses:nll"),
     f"loss.custom: has no effect {_PER_OUTPUT} custom). Received:"
     " 'my.losses:nll'"),
    (_with("loss", custom="my.losses:nll", name="huber"),
     "loss.name: has no effect with loss.custom (the custom loss is computed"
     " instead). Received: 'huber'"),
    (_with("loss", custom="my.losses:nll", from_logits=True),
     f"loss.from_logits: has no effect with loss.custom ({_CUSTOM_LOGITS})."
     " Received: True"),
    ({**BASE, "loss": {"outputs": [
        _ONE_OUTPUT[0], {"output": "p", "label_column": "z",
                         "custom": "my.losses:nll", "name": "mse"}]}},
     "loss.outputs[1].name: has no effect with loss.outputs[1].custom (the"
     " custom loss is computed instead). Received: 'mse'"),
    ({**BASE, "loss": {"outputs": [
        {**_ONE_OUTPUT[0], "custom": "my.losses:nll", "from_logits": True}]}},
     f"loss.outputs[0].from_logits: has no effect with"
     f" loss.outputs[0].custom ({_CUSTOM_LOGITS}). Received: True"),
    (_model(predictions_column="p", signature="serving_default"),
     "model.signature: has no effect with model.predictions_column (no model"
     " runs). Received: 'serving_default'"),
    (_model(path="m.keras", predictions_kind="probabilities"),
     "model.predictions_kind: has no effect without model.predictions_column"
     " (a model's outputs are described by loss.from_logits). Received:"
     " 'probabilities'"),
    (_with("stats", max_slices=5),
     "stats.max_slices: has no effect without stats.slice_by (there are no"
     " slices). Received: 5"),
    (_with("output", clean={"relabel_min_probability": 0.8}),
     "output.clean.relabel_min_probability: has no effect without"
     " output.clean.relabel (only relabelling reads it). Received: 0.8"),
    (_with("output", weights={"factor": 0.5}),
     "output.weights.factor: has no effect with output.weights.scheme"
     " 'drop_flagged' (only 'downweight_flagged' reads it). Received: 0.5"),
    (_with("output", weights={"scheme": "loss_bins", "factor": 0.5}),
     "output.weights.factor: has no effect with output.weights.scheme"
     " 'loss_bins' (only 'downweight_flagged' reads it). Received: 0.5"),
    (_with("output", weights={"scheme": "downweight_flagged", "bins": 4}),
     "output.weights.bins: has no effect with output.weights.scheme"
     " 'downweight_flagged' (only 'loss_bins' reads it). Received: 4"),
    (_with("output", weights={"scheme": "loss_bins", "reasons": ["top_k"]}),
     "output.weights.reasons: has no effect with output.weights.scheme"
     " 'loss_bins' (its weights are loss bins, not flags). Received:"
     " ['top_k']"),
    (_model(path="m.keras", signature="serving_default"),
     "model.signature: has no effect with a .keras model.path (only a"
     " SavedModel has signatures). Received: 'serving_default'"),
    ({**_model(predictions_column="p"), "runtime": {"device": "cpu"}},
     "runtime.device: has no effect with model.predictions_column (no model"
     " runs). Received: 'cpu'"),
    ({**_model(predictions_column="p"),
      "runtime": {"accelerator": "type:nvidia-l4;count:1"}},
     "runtime.accelerator: has no effect with model.predictions_column (no"
     " model runs). Received: 'type:nvidia-l4;count:1'"),
    (_with("output", clean={"drop_reasons": ["loss_quantile", "top_k"]}),
     "output.clean.drop_reasons: has no effect for 'top_k', a rule that is"
     " off in this config (no row is flagged for it). Received:"
     " ['loss_quantile', 'top_k']"),
    (_with("output", weights={"reasons": ["robust_z"]}),
     "output.weights.reasons: has no effect for 'robust_z', a rule that is"
     " off in this config (no row is flagged for it). Received:"
     " ['robust_z']"),
])
def test_a_key_without_effect_in_its_mode_is_refused(raw, message):
  assert _error(raw) == message


@pytest.mark.parametrize("raw", [
    # Set where they have an effect.
    {**_model(path="m{checkpoint}.keras", checkpoints=[1, 2]),
     "dynamics": {"easy_confidence": 0.6, "ambiguous_variability": 0.3}},
    {**BASE, "loss": {"outputs": [{**_ONE_OUTPUT[0], "name": "mse",
                                   "from_logits": False}]}},
    _with("loss", custom="my.losses:nll", reduce="sum", args={"q": 0.3}),
    _with("stats", slice_by="group", max_slices=5),
    {**_with("output", clean={"relabel": True,
                              "relabel_min_probability": 0.8},
             weights={"scheme": "loss_bins", "bins": 4}),
     "flag": {"label_issues": "confident_learning"}},
    {**BASE, "flag": {"label_issues": "confident_learning", "top_k": 5},
     "output": {"clean": {"relabel": True, "relabel_min_probability": 0.8,
                          "drop_reasons": ["non_finite", "label_issue"]},
                "weights": {"scheme": "downweight_flagged", "factor": 0.5,
                            "reasons": ["top_k"]}}},
    _model(path="saved_model_dir", signature="serving_default"),
    {**_model(predictions_column="p"), "runtime": {"accelerator": None}},
    _model(predictions_column="p", predictions_kind="logits"),
    # Unset: left out, or null (a null sets nothing).
    _outputs(),
    {**_outputs(name=None, custom=None),
     "input": {"pattern": "x", "label_column": None},
     "model": {"path": "m.keras", "output": None}},
    _with("output", weights={"scheme": "loss_bins", "reasons": None}),
])
def test_keys_set_where_they_have_an_effect_or_unset_are_accepted(raw):
  AuditConfig.from_dict(raw)


def test_a_key_without_effect_is_refused_from_set_and_on_the_command_line(
    tmp_path, capsys):
  path = tmp_path / "config.yaml"
  path.write_text(yaml.safe_dump({**BASE, "output": {
      "dir": str(tmp_path / "out")}}))
  message = ("stats.max_slices: has no effect without stats.slice_by (there"
             " are no slices). Received: 20")
  with pytest.raises(ConfigError) as info:
    load_config(str(path), ["stats.max_slices=20"])
  assert str(info.value) == message
  assert load_config(str(path), ["stats.max_slices=20",
                                 "stats.slice_by=group"]).stats.max_slices == 20
  assert audit.main(["--config", str(path), "--set",
                     "stats.max_slices=20"]) == 2
  assert capsys.readouterr().err == f"lossaudit: error: {message}\n"
  assert not (tmp_path / "out").exists()


# --- Checks of the config alone, made as it loads -----------------------------


@pytest.mark.parametrize("raw, message", [
    (_with("input", label_column=None),
     "input.label_column: expected a column name; a loss needs labels."
     " Received: None"),
    ({**_with("input", format="parquet"),
      "model": {"path": "m", "serialized_examples_input": "examples"}},
     "model.serialized_examples_input: needs input.format 'tfrecord' (Parquet"
     " rows are not serialized tf.Examples). Received: 'examples' with"
     " input.format 'parquet'"),
])
def test_checks_of_the_config_alone_are_made_as_it_loads(raw, message):
  assert _error(raw) == message
