"""Adam for ``pyro.infer.SVI`` as one multi-tensor torch optimizer.

``pyro.optim.Adam`` keeps one ``torch.optim.Adam`` per parameter and steps them one after
the other; on the small networks of latent variable models that Python loop costs as much as
the model itself. :class:`MultiTensorAdam` is the same algorithm (Kingma and Ba, 2015) with the
same per-parameter state, held by a single ``torch.optim.Adam`` whose ``foreach`` kernels
update every parameter at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pyro
import torch
from pyro.optim import PyroOptim


class MultiTensorAdam(PyroOptim):
    """``pyro.optim.Adam`` with one ``torch.optim.Adam(foreach=True)`` for all parameters.

    Like every ``PyroOptim`` it steps exactly the parameters SVI hands it (those of the
    current traces) and registers new ones as they appear. ``get_state`` / ``set_state``
    use ``PyroOptim``'s format (parameter name -> a one-parameter optimizer state dict), so
    state saved from ``pyro.optim.Adam`` loads here and the other way round.

    :param optim_args: keyword arguments of ``torch.optim.Adam`` (``lr``, ``betas``, ...).
    :param lr_factor: a schedule: step t (from 0) uses ``lr * lr_factor(t)`` (as
        ``torch.optim.lr_scheduler.LambdaLR``); None keeps the learning rate constant. t is
        read from Adam's own step count, so the schedule resumes with a loaded state.
    """

    def __init__(self, optim_args: dict, lr_factor: Callable[[int], float] | None = None) -> None:
        if not isinstance(optim_args, dict):
            raise TypeError(f"optim_args must be a dict; got {type(optim_args).__name__}")
        if lr_factor is not None and "lr" not in optim_args:
            raise ValueError("lr_factor needs a base learning rate in optim_args['lr']")
        super().__init__(torch.optim.Adam, optim_args)
        self.lr_factor = lr_factor
        self._optimizer: torch.optim.Adam | None = None
        self._known: set[torch.Tensor] = set()

    def __call__(
        self,
        params: Iterable[torch.Tensor],
        *args: Any,
        clock: Iterable[torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        """Step ``params``; ``lr_factor``'s step is the most steps any of ``clock`` (default:
        ``params``) has taken, so a caller stepping a subset can keep one schedule."""
        params = list(params)
        self._register([p for p in params if p not in self._known])
        if self._optimizer is None:
            return
        # Parameters outside this step's traces keep their values, as with PyroOptim.
        for param in self._known.difference(params):
            param.grad = None
        if self.lr_factor is not None:
            taken = self._steps_taken(params if clock is None else list(clock))
            lr = self.pt_optim_args["lr"] * self.lr_factor(taken)
            for group in self._optimizer.param_groups:
                group["lr"] = lr
        self._optimizer.step()

    def _steps_taken(self, params: list[torch.Tensor]) -> int:
        state = self._optimizer.state
        steps = (state.get(p, {}).get("step") for p in params)  # get: adds no empty state
        return max((int(step) for step in steps if step is not None), default=0)

    def _register(self, new: list[torch.Tensor]) -> None:
        if not new:
            return
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(new, foreach=True, **self.pt_optim_args)
        else:
            self._optimizer.add_param_group({"params": new})
        self._known.update(new)
        for param in new:
            name = pyro.get_param_store().param_name(param)
            saved = self._state_waiting_to_be_consumed.pop(name, None)
            if saved is not None:
                self._optimizer.state[param] = _on_device_of(
                    param, next(iter(saved["state"].values()))
                )

    def get_state(self) -> dict:
        if self._optimizer is None:
            return {}
        store = pyro.get_param_store()
        group = {k: v for k, v in self._optimizer.param_groups[0].items() if k != "params"}
        return {
            store.param_name(param): {
                "state": {0: dict(self._optimizer.state[param])},
                "param_groups": [{**group, "params": [0]}],
            }
            for param in self._known
            if param in self._optimizer.state
        }


def _on_device_of(param: torch.Tensor, saved: dict) -> dict:
    """A saved one-parameter Adam state where ``torch.optim``'s ``load_state_dict`` puts it:
    the moments on the parameter's device and in its dtype (a checkpoint loads on the CPU),
    the step count as it was."""
    return {
        key: value.to(param) if isinstance(value, torch.Tensor) and key != "step" else value
        for key, value in saved.items()
    }
