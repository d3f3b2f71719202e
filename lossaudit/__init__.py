"""lossaudit: per-sample losses, outliers and label issues of whole datasets.

One import package: `lossaudit.pipelines` (the audit, the CLI) and
`lossaudit.transforms` (its PTransforms) come from the repository's top-level
`pipelines/` and `transforms/` folders.
"""

import os
import tempfile

# Keras writes ~/.keras/keras.json when it is first imported and finds none.
# A run writes only under output.dir and the temp directory, so unless the
# user has a Keras home already, Keras gets one under the temp directory.
if "KERAS_HOME" not in os.environ and not os.path.exists(
    os.path.join(os.path.expanduser("~"), ".keras", "keras.json")):
  os.environ["KERAS_HOME"] = os.path.join(tempfile.gettempdir(),
                                          "lossaudit-keras")

# The namespace of lossaudit's Beam metrics (counters and distributions).
METRICS_NAMESPACE = "lossaudit"
