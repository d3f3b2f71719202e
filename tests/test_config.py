"""The typed config: every error names the key, the expected and the received."""

import pytest
import yaml

from lossaudit.config import AuditConfig, ConfigError, apply_override, load_config
from pipelines import audit

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
  assert config.flag.loss_quantile == 0.99
  assert config.output.num_shards == 0
  assert config.input.patterns == ("data/*.tfrecord",)
  assert config.to_dict()["input"]["pattern"] == "data/*.tfrecord"


def test_list_of_patterns():
  config = _config(input__pattern=["a/*.gz", "b/*.gz"])
  assert config.input.patterns == ("a/*.gz", "b/*.gz")


@pytest.mark.parametrize("changes, message", [
    ({"input__format": "csv"},
     r"input.format: expected one of \{.*'parquet'.*\}. Received: 'csv'"),
    ({"input__pattern": ""},
     r"input.pattern: expected a non-empty glob or list of globs. Received: ''"),
    ({"input__feature_columns": 3},
     r"input.feature_columns: expected null, a list of column names or a"
     r" mapping model input -> column. Received: 3"),
    ({"batch_size": 0}, r"batch_size: expected an integer >= 1. Received: 0"),
    ({"batch_size": True}, r"batch_size: expected an integer >= 1. Received: True"),
    ({"loss__reduce": "avg"},
     r"loss.reduce: expected one of \{.*\}. Received: 'avg'"),
    ({"loss__name": "sparse_categorical_crosentropy"},
     r"loss.name: expected one of \[.*\]. Received:"
     r" 'sparse_categorical_crosentropy'. Did you mean"
     r" 'sparse_categorical_crossentropy'\?"),
    ({"loss__from_logits": "yes"},
     r"loss.from_logits: expected true or false. Received: 'yes'"),
    ({"loss__custom": "no_colon"},
     r"loss.custom: expected 'package.module:function'. Received: 'no_colon'"),
    ({"stats__epsilon": 0},
     r"stats.epsilon: expected a number in \(0, 0.5\]. Received: 0"),
    ({"stats__quantiles": [0.5, 1.5]},
     r"stats.quantiles: expected a non-empty list of numbers in \[0, 1\]"),
    ({"flag__loss_quantile": 2},
     r"flag.loss_quantile: expected a number in \[0, 1\]. Received: 2"),
    ({"flag__top_k": 0}, r"flag.top_k: expected a positive integer. Received: 0"),
    ({"flag__label_issues": "magic"},
     r"flag.label_issues: expected null or one of \{.*\}. Received: 'magic'"),
    ({"output__num_shards": -1},
     r"output.num_shards: expected an integer >= 0. Received: -1"),
    ({"gate__max_flagged_fraction": 1.5},
     r"gate.max_flagged_fraction: expected a number in \[0, 1\]. Received: 1.5"),
])
def test_invalid_values_name_key_expected_and_received(changes, message):
  with pytest.raises(ConfigError, match=message):
    _config(**changes)


def test_unknown_keys_suggest_the_nearest():
  with pytest.raises(ConfigError, match=r"flag.los_quantile: unknown config"
                     r" key; expected one of \[.*\]. Did you mean"
                     r" flag.loss_quantile\?"):
    _config(flag__los_quantile=0.9)
  with pytest.raises(ConfigError, match=r"^inputs: unknown config key;.*Did"
                     r" you mean input\?"):
    AuditConfig.from_dict({**BASE, "inputs": {}})


def test_missing_sections():
  with pytest.raises(ConfigError, match=r"model: expected a mapping. Received: None"):
    AuditConfig.from_dict({"input": {"pattern": "x"}})
  with pytest.raises(ConfigError, match=r"output: expected a mapping. Received: 3"):
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
