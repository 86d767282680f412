"""Core network f_h (Mnih et al. 2014, §4): h_t = ReLU(Linear(h_{t-1}) + Linear(g_t)).

An LSTM core (used by DRAM, Ba et al. 2015) is available with ``cell="lstm"``.
"""

from __future__ import annotations

from torch import Tensor, nn

CELLS = ("rnn", "lstm")


class CoreNetwork(nn.Module):
    """Recurrent core.

    Args:
        input_size: width of g_t.
        hidden_size: width of h_t (paper: 256).
        cell: ``"rnn"`` (ReLU RNN, the paper's core) or ``"lstm"``.
    """

    def __init__(self, input_size: int = 256, hidden_size: int = 256, cell: str = "rnn") -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"core cell must be one of {CELLS}, got {cell!r}")
        self.cell_type, self.hidden_size = cell, hidden_size
        if cell == "rnn":
            self.cell = nn.RNNCell(input_size, hidden_size, nonlinearity="relu")
        else:
            self.cell = nn.LSTMCell(input_size, hidden_size)

    def forward(self, g_t: Tensor, state: tuple[Tensor, ...] | None = None) -> tuple[Tensor, ...]:
        """
        Args:
            g_t (Tensor[B, input_size]): glimpse feature.
            state: previous state, ``(h,)`` for the RNN or ``(h, c)`` for the LSTM, each
                ``Tensor[B, hidden_size]``; ``None`` starts from zeros.

        Returns:
            the new state; ``state[0]`` is h_t (Tensor[B, hidden_size]).
        """
        if self.cell_type == "rnn":
            return (self.cell(g_t, None if state is None else state[0]),)
        return tuple(self.cell(g_t, state))
