"""Self-supervised methods, each one small module composing multissl.losses and multissl.modules."""
