"""LoRA training (peft) for a task formulation."""
