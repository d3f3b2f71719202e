"""A custom loss is user code: whatever it raises is exit 2 naming its key.

Each case writes a small module under `tmp_path`, puts it on `sys.path`, and
runs the real CLI entry (`lossaudit.pipelines.audit.main`) on real records and
a real
saved model: the pre-run check imports the loss and calls it on the first
records, so an exception there (SystemExit included) is one line on stderr,
exit code 2, no traceback, and nothing written.
"""

import sys
import textwrap

import pytest

from tests.helpers import base_config, run_audit, two_heads_model

# At import time (module level), then `(status, message)` from the CLI.
IMPORT_CASES = {
    "zero_division": ("x = 1 / 0", "ZeroDivisionError: division by zero"),
    "runtime_error": ("raise RuntimeError('no licence here\\nsecond line')",
                      "RuntimeError: no licence here"),
    "exit_0": ("import sys\nsys.exit(0)", "SystemExit: 0"),
    "exit_3": ("import sys\nsys.exit(3)", "SystemExit: 3"),
    "exit_bare": ("import sys\nsys.exit()", "SystemExit"),
    "base_exception": ("class Halt(BaseException):\n  pass\nraise Halt('stop')",
                       "Halt: stop"),
    "missing_dependency": ("import lossaudit_no_such_dependency",
                           "ModuleNotFoundError: No module named"
                           " 'lossaudit_no_such_dependency'"),
    "syntax_error": ("def loss(:", "SyntaxError: "),
}

# In the loss function, called while the scorer traces it.
CALL_CASES = {
    "zero_division": ("return 1 / 0", "ZeroDivisionError: division by zero"),
    "runtime_error": ("raise RuntimeError('bad shapes\\nsecond line')",
                      "RuntimeError: bad shapes"),
    "exit_0": ("import sys\n  sys.exit(0)", "SystemExit: 0"),
    "exit_3": ("import sys\n  sys.exit(3)", "SystemExit: 3"),
    "key_error": ("return {}['y_true']", "KeyError: 'y_true'"),
}


@pytest.fixture
def write_module(tmp_path, monkeypatch):
  """Writes `source` as the module `name` on sys.path; forgets it after."""
  names = []

  def write(name, source):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    names.append(name)
    return name

  yield write
  for name in names:
    sys.modules.pop(name, None)


def _assert_config_error(capsys, tmp_path, message):
  """The one line of a run refused (exit 2, nothing written); returns it."""
  err = capsys.readouterr().err
  assert message in err
  assert err.startswith("lossaudit: error: ") and err.count("\n") == 1
  assert "Traceback" not in err
  assert "second line" not in err
  assert not (tmp_path / "out").exists()
  return err


@pytest.mark.parametrize("case", list(IMPORT_CASES))
def test_errors_while_importing(tmp_path, tfrecord_dir, classifier_path,
                                write_module, capsys, case):
  body, described = IMPORT_CASES[case]
  name = write_module(f"import_{case}", body + "\n\ndef loss(y_true, y_pred):"
                      "\n  return y_pred[:, 0]\n")
  run_audit(base_config(tfrecord_dir / "*.tfrecord.gz", classifier_path,
                        tmp_path / "out", loss={"custom": f"{name}:loss"}),
            exit_code=2)
  err = _assert_config_error(
      capsys, tmp_path, f"loss.custom: could not build the loss: {described}")
  assert err.endswith("; expected an importable 'package.module:function'."
                      f" Received: '{name}:loss'\n")


@pytest.mark.parametrize("custom, make, described", [
    ("lossaudit_no_such_module:loss", None,
     "ModuleNotFoundError: No module named 'lossaudit_no_such_module'"),
    ("{name}:nowhere", "def loss(y_true, y_pred):\n  return y_pred\n",
     "AttributeError: module '{name}' has no attribute 'nowhere'"),
    ("{name}:Losses.nowhere", "class Losses:\n  pass\n",
     "AttributeError: module '{name}' has no attribute 'Losses.nowhere'"),
    ("{name}:loss", "loss = 3\n",
     "TypeError: '{name}:loss' is not a function: it is of type int"),
], ids=["no_module", "no_attribute", "no_nested_attribute", "not_callable"])
def test_missing_or_not_callable(tmp_path, tfrecord_dir, classifier_path,
                                 write_module, capsys, custom, make,
                                 described):
  name = "lookup_" + custom.split(":")[1].replace(".", "_")
  if make:
    write_module(name, make)
  custom, described = custom.format(name=name), described.format(name=name)
  run_audit(base_config(tfrecord_dir / "*.tfrecord.gz", classifier_path,
                        tmp_path / "out", loss={"custom": custom}),
            exit_code=2)
  _assert_config_error(capsys, tmp_path,
                       f"loss.custom: could not build the loss: {described};")


@pytest.mark.parametrize("case", list(CALL_CASES))
def test_errors_while_calling(tmp_path, tfrecord_dir, classifier_path,
                              write_module, capsys, case):
  body, described = CALL_CASES[case]
  name = write_module(f"call_{case}",
                      f"def loss(y_true, y_pred):\n  {body}\n")
  run_audit(base_config(tfrecord_dir / "*.tfrecord.gz", classifier_path,
                        tmp_path / "out", loss={"custom": f"{name}:loss"}),
            exit_code=2)
  err = _assert_config_error(
      capsys, tmp_path, f"loss.custom: '{name}:loss' failed on the first 64"
      " records of ")
  assert err.endswith(f".tfrecord.gz: {described}\n")


@pytest.mark.parametrize("where", ["import", "call"])
def test_keyboard_interrupt_is_an_interrupted_run(
    tmp_path, tfrecord_dir, classifier_path, write_module, capsys, where):
  interrupt = "raise KeyboardInterrupt"
  source = (f"{interrupt}\n\ndef loss(y_true, y_pred):\n  return y_pred\n"
            if where == "import" else
            f"def loss(y_true, y_pred):\n  {interrupt}\n")
  name = write_module(f"interrupt_{where}", source)
  config = base_config(tfrecord_dir / "*.tfrecord.gz", classifier_path,
                       tmp_path / "out", loss={"custom": f"{name}:loss"})
  run_audit(config, exit_code=130)
  assert capsys.readouterr().err == (
      "lossaudit: interrupted by SIGINT; the run stopped, its scratch files"
      " and lock are removed and no summary.json was written (shards it"
      " wrote are partial; the next run deletes them)\n")
  assert not (tmp_path / "out" / ".lossaudit-lock.json").exists()


@pytest.fixture(scope="module")
def two_heads_path(tmp_path_factory):
  """A softmax head `probs` and a regression head `value` on the same x."""
  model = two_heads_model(11, 8, ("probs", "value"))
  path = tmp_path_factory.mktemp("two_heads") / "two_heads.keras"
  model.save(str(path))
  return path


@pytest.mark.parametrize("module, source, first_loss, message, ending", [
    ("multi_import", "import sys\nsys.exit(0)\n",
     {"name": "sparse_categorical_crossentropy"},
     "loss.outputs[1].custom: could not build the loss: SystemExit: 0;", ""),
    ("multi_call", "def loss(y_true, y_pred):\n"
     "  raise RuntimeError('value head broke')\n",
     {"custom": "tests.custom_losses:per_sample_nll"},
     "loss.outputs[1].custom: 'multi_call:loss' failed on the first 64"
     " records of ", ".tfrecord.gz: RuntimeError: value head broke\n"),
])
def test_multi_output_errors_name_the_failing_output(
    tmp_path, tfrecord_dir, two_heads_path, write_module, capsys, module,
    source, first_loss, message, ending):
  name = write_module(module, source)
  outputs = [
      dict(first_loss, output="probs", label_column="label"),
      {"output": "value", "label_column": "target", "custom": f"{name}:loss"},
  ]
  run_audit(base_config(tfrecord_dir / "*.tfrecord.gz", two_heads_path,
                        tmp_path / "out", loss={"outputs": outputs}),
            exit_code=2)
  err = _assert_config_error(capsys, tmp_path,
                             message.replace("multi_call", name))
  assert err.endswith(ending)
