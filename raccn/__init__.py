"""raccn: recognition with recurrent visual attention (RAM, DRAM, RA-CNN) in PyTorch Lightning."""

import os

__version__ = "0.1.0"

# raccn.datamodules is the repository's top-level datamodules/ folder, installed as
# raccn/datamodules/ (package-dir in pyproject.toml). Run from a source checkout (or an editable
# install of one), the same name finds the folder beside this package, in the same checkout.
_checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.path.isdir(os.path.join(__path__[0], "datamodules")) and os.path.isfile(
    os.path.join(_checkout, "datamodules", "__init__.py")
):
    __path__.append(_checkout)
