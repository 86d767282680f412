"""raccn: recognition with recurrent visual attention (RAM, DRAM, RA-CNN) in PyTorch Lightning."""

__version__ = "0.1.0"
