"""The synthetic shapes data: its vocabulary, the generator, and the checker that reads attributes back."""
