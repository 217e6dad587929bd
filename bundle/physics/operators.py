"""Linear operators on torch tensors: the contract every physics operator of the bundle follows.

A :class:`LinearOperator` maps tensors of shape ``in_shape`` to tensors of shape ``out_shape`` and knows its
exact adjoint.  ``apply`` is differentiable: autograd uses ``adjoint`` for the backward pass, so gradients of a
loss through a projector are the exact back projection, not a numerical approximation of it.

Every operator passes the adjointness test ⟨A x, y⟩ = ⟨x, Aᵀ y⟩ (:meth:`LinearOperator.adjointness_test`) and
has a power-iteration estimate of its largest singular value (:meth:`LinearOperator.norm`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

__all__ = [
    "AdjointOperator",
    "CompositeOperator",
    "ElementwiseMultiplication",
    "IdentityOperator",
    "LinearOperator",
    "MatrixOperator",
]


class _ApplyWithExactAdjoint(torch.autograd.Function):
    """Autograd bridge: forward = ``op._apply``, backward = ``op._adjoint`` (exact, no tape through kernels)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, op: LinearOperator) -> torch.Tensor:  # type: ignore[override]
        ctx.op = op
        return op._apply(x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        return ctx.op._adjoint(grad_out.contiguous()), None


class _AdjointWithExactAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: torch.Tensor, op: LinearOperator) -> torch.Tensor:  # type: ignore[override]
        ctx.op = op
        return op._adjoint(y)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        return ctx.op._apply(grad_out.contiguous()), None


def check_tensor_shape(tensor: object, expected_shape: Sequence[int], name: str) -> torch.Tensor:
    """Raise a ``TypeError``/``ValueError`` naming ``name`` unless ``tensor`` is a tensor of ``expected_shape``."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {tuple(expected_shape)}, got {type(tensor).__name__}")
    if tuple(tensor.shape) != tuple(expected_shape):
        raise ValueError(f"{name} must have shape {tuple(expected_shape)}, got {tuple(tensor.shape)}")
    return tensor


class LinearOperator(ABC):
    """A linear map ``A: R^in_shape -> R^out_shape`` with its exact adjoint.

    Subclasses implement :meth:`_apply` and :meth:`_adjoint` for tensors of exactly ``in_shape`` /
    ``out_shape``; the public :meth:`apply` / :meth:`adjoint` check shapes and make the call differentiable.
    """

    def __init__(self, *, in_shape: Sequence[int], out_shape: Sequence[int]) -> None:
        self._in_shape = tuple(int(s) for s in in_shape)
        self._out_shape = tuple(int(s) for s in out_shape)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self._in_shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self._out_shape

    @abstractmethod
    def _apply(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _adjoint(self, y: torch.Tensor) -> torch.Tensor: ...

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for ``x`` of shape ``in_shape``; returns shape ``out_shape``."""
        check_tensor_shape(x, self.in_shape, f"{type(self).__name__}.apply input")
        if torch.is_grad_enabled() and x.requires_grad:
            return _ApplyWithExactAdjoint.apply(x, self)
        return self._apply(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``Aᵀ y`` for ``y`` of shape ``out_shape``; returns shape ``in_shape``."""
        check_tensor_shape(y, self.out_shape, f"{type(self).__name__}.adjoint input")
        if torch.is_grad_enabled() and y.requires_grad:
            return _AdjointWithExactAdjoint.apply(y, self)
        return self._adjoint(y)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x)

    @property
    def H(self) -> LinearOperator:
        """The adjoint operator ``Aᵀ`` as a :class:`LinearOperator`."""
        return AdjointOperator(self)

    def __matmul__(self, other: LinearOperator) -> LinearOperator:
        return CompositeOperator([self, other])

    def adjointness_test(
        self,
        *,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> float:
        """Relative mismatch |⟨A x, y⟩ − ⟨x, Aᵀ y⟩| / max(|⟨A x, y⟩|, tiny) for random ``x``, ``y``.

        ``x`` and ``y`` are drawn uniformly in [0, 1) from ``generator`` (non-negative, so the operators that
        expect activities are exercised in their physical domain).  The generator must live on the CPU; the
        draws are moved to ``device``.
        """
        x = torch.rand(self.in_shape, generator=generator, dtype=dtype).to(device)
        y = torch.rand(self.out_shape, generator=generator, dtype=dtype).to(device)
        lhs = float(torch.sum(self.apply(x) * y))
        rhs = float(torch.sum(x * self.adjoint(y)))
        return abs(lhs - rhs) / max(abs(lhs), 1e-300)

    def norm(
        self,
        *,
        generator: torch.Generator,
        num_iter: int = 50,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> float:
        """Largest singular value ‖A‖₂ by power iteration on ``AᵀA`` from a random start."""
        if num_iter < 1:
            raise ValueError(f"num_iter must be >= 1, got {num_iter}")
        x = torch.rand(self.in_shape, generator=generator, dtype=dtype).to(device)
        x = x / torch.linalg.vector_norm(x)
        sigma_sq = 0.0
        for _ in range(num_iter):
            z = self.adjoint(self.apply(x))
            sigma_sq = float(torch.linalg.vector_norm(z))
            if sigma_sq == 0.0:
                return 0.0
            x = z / sigma_sq
        return math.sqrt(sigma_sq)


class AdjointOperator(LinearOperator):
    """``Aᵀ`` of a given operator (apply and adjoint swapped)."""

    def __init__(self, operator: LinearOperator) -> None:
        super().__init__(in_shape=operator.out_shape, out_shape=operator.in_shape)
        self.operator = operator

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.operator._adjoint(x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.operator._apply(y)


class CompositeOperator(LinearOperator):
    """``A = A_0 ∘ A_1 ∘ … ∘ A_{k-1}`` (the last one is applied first, as in the written product)."""

    def __init__(self, operators: Sequence[LinearOperator]) -> None:
        operators = list(operators)
        if len(operators) < 1:
            raise ValueError("operators must hold at least one LinearOperator, got an empty sequence")
        for i, op in enumerate(operators):
            if not isinstance(op, LinearOperator):
                raise TypeError(f"operators[{i}] must be a LinearOperator, got {type(op).__name__}")
        for i in range(len(operators) - 1):
            if operators[i].in_shape != operators[i + 1].out_shape:
                raise ValueError(
                    f"operators[{i}].in_shape {operators[i].in_shape} must equal "
                    f"operators[{i + 1}].out_shape {operators[i + 1].out_shape}"
                )
        super().__init__(in_shape=operators[-1].in_shape, out_shape=operators[0].out_shape)
        self.operators = operators

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        for op in reversed(self.operators):
            x = op._apply(x)
        return x

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        for op in self.operators:
            y = op._adjoint(y)
        return y


class IdentityOperator(LinearOperator):
    """``I x = x`` on tensors of ``shape``."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__(in_shape=shape, out_shape=shape)

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y.clone()


class ElementwiseMultiplication(LinearOperator):
    """``D x = w ⊙ x`` (diagonal, self-adjoint) with a fixed weight tensor ``w`` such as n ⊙ a."""

    def __init__(self, weights: torch.Tensor) -> None:
        if not isinstance(weights, torch.Tensor):
            raise TypeError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
        if not bool(torch.isfinite(weights).all()):
            raise ValueError("weights must be finite everywhere; found NaN or Inf")
        super().__init__(in_shape=weights.shape, out_shape=weights.shape)
        self.weights = weights

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.weights.to(dtype=x.dtype, device=x.device) * x

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._apply(y)


class MatrixOperator(LinearOperator):
    """A dense matrix ``M`` of shape (prod(out_shape), prod(in_shape)) acting on reshaped tensors.

    Useful as an independent truth in tests and for tiny toy problems.
    """

    def __init__(self, matrix: torch.Tensor, *, in_shape: Sequence[int] | None = None,
                 out_shape: Sequence[int] | None = None) -> None:
        if not isinstance(matrix, torch.Tensor) or matrix.ndim != 2:
            raise ValueError(f"matrix must be a 2D torch.Tensor, got {getattr(matrix, 'shape', type(matrix))}")
        in_shape = tuple(in_shape) if in_shape is not None else (matrix.shape[1],)
        out_shape = tuple(out_shape) if out_shape is not None else (matrix.shape[0],)
        if math.prod(in_shape) != matrix.shape[1] or math.prod(out_shape) != matrix.shape[0]:
            raise ValueError(
                f"matrix shape {tuple(matrix.shape)} does not match out_shape {out_shape} x in_shape {in_shape}"
            )
        super().__init__(in_shape=in_shape, out_shape=out_shape)
        self.matrix = matrix

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        m = self.matrix.to(dtype=x.dtype, device=x.device)
        return (m @ x.reshape(-1)).reshape(self.out_shape)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        m = self.matrix.to(dtype=y.dtype, device=y.device)
        return (m.T @ y.reshape(-1)).reshape(self.in_shape)
