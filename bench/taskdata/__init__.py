"""Tasks' data: splits, the task config's reading, encoding records to token ids, model families."""
