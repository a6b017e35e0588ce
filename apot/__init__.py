"""apot: a reproduction of Additive Powers-of-Two quantization (Li, Dong, Wang, ICLR 2020)."""
__version__ = "0.1.0"
