"""User-facing errors.

Anything a user can cause (a bad file, a wrong shape, an unknown tensor, an invalid config) raises
``UserError`` with ONE line that says what is wrong and what to do. The CLI prints that line and exits
with code 2, without a traceback. Bugs stay ordinary exceptions, with their traceback.
"""


class UserError(ValueError):
    """A mistake in input or configuration; the message is one line: what is wrong, what to do."""


TORCH_INSTALL = "pip install 'xdream-ts[torch]'"


def require_torch(what: str):
    """The torch module, or a one-line UserError naming ``what`` needs it and how to install it.

    torch is an extra (``xdream-ts[torch]``): only gradients and training need it (Sequence Dreaming,
    the gradient inverse-set sampler, train-decoder, the torch scorer). Gradient-free search on ONNX
    models must not pull a multi-GB torch build, so every entry point that needs it asks here first.
    """
    try:
        import torch
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "torch":
            raise UserError(f"{what} needs torch, which is not installed: {TORCH_INSTALL} "
                            "(gradient-free search on ONNX models works without it)") from None
        # installed but broken: a wheel for another platform, a missing library or dependency
        raise UserError(f"{what} needs torch, which is installed but fails to import "
                        f"({' '.join(str(exc).split())[:200]}): reinstall it, {TORCH_INSTALL}") from None
    return torch
