"""multissl: self-supervised learning for images, audio and text, and across them."""

__version__ = "0.1.0"
