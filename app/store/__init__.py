"""Storage: the engine, the models and migrations, the change log's queries and writes, cursors, pruning."""
