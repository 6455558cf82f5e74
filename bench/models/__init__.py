"""Loading models: hub, folder, GGUF, tiny bases' tokenizer, k-bit bases, and checks before loading."""
