"""Small stateful building blocks that objectives compose: heads, predictors, EMA copies, queues,
learnable temperatures."""
