"""APoT / PoT / uniform quantization: level sets (levels, schemes: pure math, no torch),
autograd ops (functional), modules, model conversion (convert). Import the submodules: the
workflow reads the scheme registry at parse time, without torch."""
