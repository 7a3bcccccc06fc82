"""Networks for tests: built by the library, then given BatchNorm state that a trained network could have."""
import torch
from torch import nn


def with_trained_statistics(net: nn.Module) -> nn.Module:
    """Fill `net`'s BatchNorm buffers (in place) with running statistics and a counter far from the fresh
    (0, 1, 0): a save/load or eval-mode path that drops or resets them then changes the outputs."""
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.2)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
            elif name.endswith("num_batches_tracked"):
                buf.fill_(1234)
    return net
