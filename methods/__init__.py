"""How each method turns a base model into a trainable one; everything is looked up from the method YAML."""
