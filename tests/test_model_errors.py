"""How a model's own error on one record reads in its dead letter."""

import tensorflow as tf

from lossaudit.errors import op_error_line


def test_graph_error_names_its_node_and_cause():
  error = tf.errors.InvalidArgumentError(
      None, None,
      "Graph execution error:\n\nDetected at node map/while/DecodePng"
      " defined at (most recent call last):\n<stack traces unavailable>\n"
      "Unknown image file format. One of JPEG, PNG required.\n\t"
      " [[{{node map/while/DecodePng}}]] [Op:__inference_graph_338]")
  assert op_error_line(error) == (
      "InvalidArgumentError at map/while/DecodePng: Unknown image file"
      " format. One of JPEG, PNG required.")


def test_eager_error_keeps_its_message_without_the_op_suffix():
  try:
    tf.io.decode_png(tf.constant(b"garbage"))
  except tf.errors.InvalidArgumentError as e:
    line = op_error_line(e)
  assert line.startswith("InvalidArgumentError: ")
  assert "[Op:" not in line and "\n" not in line
  assert line == ("InvalidArgumentError: Unknown image file format. One of"
                  " JPEG, JPEG XL, PNG, GIF, BMP, WebP required.")
