"""Functional ops with ``torch.nn.functional`` semantics and explicit ``*_backward``.

Each op validates its arguments, fixes dtype and contiguity, and calls the implementation
the backend registry picks (C++, Numba or NumPy); see ``pyaiml.backend_info()``. Inputs are
checked for NaN/inf unless ``set_check_finite(False)`` (process-wide) or a
``with finite_checks(False):`` block (this thread only) turns the checks off.
"""
from pyaiml.ops._validate import finite_checks, get_check_finite, set_check_finite
from pyaiml.ops.attention import attention_rows, scaled_dot_product_attention, scaled_dot_product_attention_backward
from pyaiml.ops.linalg import linear, linear_backward, linear_q8, matmul, matmul_backward
from pyaiml.ops.activations import (gelu, gelu_backward, log_softmax, log_softmax_backward, relu, relu_backward, sigmoid, sigmoid_backward, softmax, softmax_backward, tanh, tanh_backward)  # noqa: E501
from pyaiml.ops.hmm import hmm_categorical_loglik, hmm_forward_backward, hmm_gaussian_loglik, hmm_gmm_loglik, hmm_viterbi
from pyaiml.ops.conv import conv1d, conv1d_backward, conv2d, conv2d_backward  # noqa: E402
from pyaiml.ops.pool import max_pool1d, max_pool1d_backward, max_pool2d, max_pool2d_backward  # noqa: E402
from pyaiml.ops.word2vec import word2vec_train_epoch  # noqa: E402
from pyaiml.ops.rnn import gru_sequence, gru_sequence_backward, lstm_sequence, lstm_sequence_backward
from pyaiml.ops.transformer import layer_norm, rms_norm  # noqa: E402

__all__ = [
    "matmul",
    "matmul_backward",
    "linear",
    "linear_backward",
    "linear_q8",
    "relu", "relu_backward", "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "softmax", "softmax_backward",
    "log_softmax", "log_softmax_backward", "gelu", "gelu_backward",
    "hmm_forward_backward",
    "hmm_viterbi",
    "hmm_categorical_loglik",
    "hmm_gaussian_loglik",
    "hmm_gmm_loglik",
    "conv1d", "conv1d_backward", "conv2d", "conv2d_backward",
    "max_pool1d", "max_pool1d_backward", "max_pool2d", "max_pool2d_backward",
    "scaled_dot_product_attention",
    "attention_rows",
    "scaled_dot_product_attention_backward",
    "word2vec_train_epoch",
    "lstm_sequence", "lstm_sequence_backward", "gru_sequence", "gru_sequence_backward",
    "layer_norm",
    "rms_norm",
    "set_check_finite",
    "get_check_finite",
    "finite_checks",
]
