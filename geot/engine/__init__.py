"""Pipeline stages: train, predict, evaluate, export."""
