"""lorascan: decide whether a LoRA adapter carries a trigger-activated backdoor.

Re-implements the system of arXiv:2605.30189 ("Token-Level Generalization in LoRA Adapter
Backdoors") as installable, tested software. Importing the package is cheap: torch and
transformers are imported only by the modules that need them.
"""

__version__ = "0.1.0"
