"""lossaudit: per-sample losses, outliers and label issues of whole datasets.

One import package: `lossaudit.pipelines` (the audit, the CLI) and
`lossaudit.transforms` (its PTransforms) come from the repository's top-level
`pipelines/` and `transforms/` folders, installed inside this package.
"""

import os
import tempfile

# Imported from a source checkout (its root on sys.path: the current
# directory, PYTHONPATH) rather than from the install, this folder has no
# pipelines/, transforms/ or configs/: they sit beside it, so the package
# looks there too. An installed lossaudit has them inside and adds nothing.
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.path.isdir(os.path.join(__path__[0], "pipelines")) and all(
    os.path.isfile(os.path.join(_CHECKOUT, name, "__init__.py"))
    for name in ("pipelines", "transforms", "configs")):
  __path__.append(_CHECKOUT)

# Keras writes ~/.keras/keras.json when it is first imported and finds none.
# A run writes only under output.dir and the temp directory, so unless the
# user has a Keras home already, Keras gets one under the temp directory.
if "KERAS_HOME" not in os.environ and not os.path.exists(
    os.path.join(os.path.expanduser("~"), ".keras", "keras.json")):
  os.environ["KERAS_HOME"] = os.path.join(tempfile.gettempdir(),
                                          "lossaudit-keras")

# The namespace of lossaudit's Beam metrics (counters and distributions).
METRICS_NAMESPACE = "lossaudit"
