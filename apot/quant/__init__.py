"""APoT / PoT / uniform quantization: level sets, autograd ops, modules, model conversion."""
from .convert import FLOAT_BITS, quantize_model
from .levels import SCHEMES, apot_terms, levels, magnitude_levels
from .modules import (ActivationQuantizer, EightBitConv2d, EightBitLinear, QuantConv2d,
                      WeightQuantizer)

__all__ = ["FLOAT_BITS", "SCHEMES", "ActivationQuantizer", "EightBitConv2d", "EightBitLinear",
           "QuantConv2d", "WeightQuantizer", "apot_terms", "levels", "magnitude_levels",
           "quantize_model"]
